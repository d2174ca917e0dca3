"""The pool-hopping simulation (ops/simulate_pplns.py), small: PPLNS pays a
hopper what its shares are worth, proportional pays it far more."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_hopper_gains_nothing_under_pplns_and_a_lot_under_proportional():
    spec = importlib.util.spec_from_file_location("simulate_pplns", ROOT / "ops" / "simulate_pplns.py")
    sim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sim)
    runs = [sim.simulate(3000, 50, 0.435, 0.5, 2.0, seed) for seed in (1, 2, 3)]
    hop, se = sim.stderr_of(runs, "pplns", "hopper")
    assert abs(hop - 1.0) < 0.05, (hop, se)
    prop, _ = sim.stderr_of(runs, "proportional", "hopper")
    steady, _ = sim.stderr_of(runs, "proportional", "steady")
    assert prop > 1.4 and steady < 0.95
    pplns_steady, _ = sim.stderr_of(runs, "pplns", "steady")
    print(f"\npool hopping: 3 runs x 3000 blocks, hopper leaving at 0.435 D; efficiency PPLNS hopper {hop:.3f} "
          f"(+/- {se:.3f}), steady {pplns_steady:.3f}; proportional hopper {prop:.3f}, steady {steady:.3f}")
