"""Share accounting: per-worker statistics, hashrate, rounds, the PPLNS
window and the durable share log, kept in Redis without ever blocking a
miner.

Layout (pure core, thin adapters):

* ``model``    batches of events, and the collector the reactor appends to;
* ``journal``  journal record encoding (pure) and the segment files (I/O);
* ``window``   PPLNS window entries, trimming and snapshot arithmetic (pure);
* ``hashrate`` hashrate math and time-series buckets (pure);
* ``keys``     the Redis key layout (pure);
* ``ops``      a batch turned into the arguments of the Lua apply script (pure);
* ``lua``      the Lua scripts;
* ``writer``   the Redis/journal adapter, confined to one writer thread;
* ``service``  the event sink and the Twisted service (the reactor side);
* ``sharelog`` reading the durable share log back;
* ``read``     the read API for the HTTP API and dashboard.

See docs/redis.md.
"""
