"""The payout service (``hashcoop payouts``; docs/payouts.md).

Pure core: ``pplns`` (split, report, digest), ``maturity`` (block decisions),
``payments`` (batching, funded-transaction check, reconciliation).
Adapters: ``models``/``db``/``ledger`` (SQLAlchemy, Alembic migrations in
``migrations``), ``read`` (the read API), ``reads`` (the ledger as the HTTP side reads it),
``verify``, ``service`` (Twisted, node RPC, Redis). Its wiring point,
``build_payouts``, and its command line are in ``hashcoop.pool.app``.
"""
