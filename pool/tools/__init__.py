"""Tools beside the pool: the stand-in node (``devnode``), the CPU miner
(``miner``), the benchmark suite (``bench``) and ``demo``. They may import
the pool; nothing in the pool imports them."""
