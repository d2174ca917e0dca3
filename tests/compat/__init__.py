"""Miner compatibility ground truth.

`sequences/<client>.json` records, from each miner's own source code, the exact
Stratum V1 lines the client sends on a fresh connection and what it requires of
the server's replies.  See docs/miner-compat.md for the summary and citations.
"""
