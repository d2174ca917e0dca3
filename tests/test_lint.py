"""The lint step: ``ruff check`` (pyflakes and import sorting, configured in
pyproject.toml) over the whole tree, as part of the test suite, so the
README's test command and .ci/run include it."""
import subprocess
import sys

from tests.procs import ROOT


def test_ruff_finds_nothing():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
