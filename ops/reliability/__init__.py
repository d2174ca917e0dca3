"""The slow part of the hostile-input and fault battery (issue 8,
RELIABILITY.md): ``python -m ops.reliability fuzz|soak|battery|all``.

``fuzz``     the line -> JSON -> dispatch fuzz harness of tests/hostile,
             driven by a fast mutation loop for 10^6 inputs and more
``soak``     the pool under ``hashcoop run`` (Redis accounting, the stand-in
             node finding blocks) at twice a configured peak load for an hour
``battery``  the hostile, crash and pool-hopping tests at full scale, with
             the figures they record
``all``      the three, in that order
``rejudge``  the soak recorded in ``--report`` judged again by this tree's
             verdict, from its samples (nothing is run)

Each writes its section of ``reports/reliability-YYYYMMDD.json`` and prints a
summary. Run it from the repository root with the venv's Python
(``.venv/bin/python -m ops.reliability ...``): the fuzz target and the
battery live in ``tests/``.
"""
