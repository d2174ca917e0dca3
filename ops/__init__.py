"""Operator tools. Most files here are scripts run by path
(``python ops/simulate_pplns.py``); ``ops.reliability`` is a package run with
``python -m ops.reliability`` (RELIABILITY.md)."""
