"""``NullMetrics`` takes every call ``Metrics`` takes, and is false."""
from hashcoop.pool.metrics import Metrics, NullMetrics


def test_null_metrics_take_every_call_the_real_ones_take():
    real, null = Metrics(), NullMetrics()
    assert not null and real
    for name, metric in vars(real).items():
        if name.startswith("_") or not hasattr(metric, "inc") and not hasattr(metric, "set") and not hasattr(metric, "observe"):
            continue
        m = getattr(null, name)
        m.labels("a", "b").inc()
        m.inc(2)
        m.dec()
        m.set(1)
        m.observe(0.5)
        m.set_function(lambda: 1)
    assert null.share_validation.wrap(len) is len
