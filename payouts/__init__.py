"""The payout service (``hashcoop payouts``; docs/payouts.md).

Pure core: ``pplns`` (split, report, digest), ``maturity`` (block decisions),
``payments`` (batching, funded-transaction check, reconciliation).
Adapters: ``models``/``db``/``ledger`` (SQLAlchemy, Alembic migrations in
``migrations``), ``read`` (the read API), ``verify``, ``service`` (Twisted,
node RPC, Redis; the wiring point ``build_payouts``), ``cli``.
"""
