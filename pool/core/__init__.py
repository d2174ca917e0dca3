"""The pure core: Bitcoin primitives (``btc``), the block template, the
coinbase and merkle branch, jobs, share validation, vardiff, domain events,
the PPLNS window and the withholding test. No I/O, no reactor; it imports
nothing outside ``hashcoop.pool.core`` (tests/test_architecture.py)."""
