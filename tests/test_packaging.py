"""hashcoop installs and imports under its own name.

The folders pool/, stratum/ and payouts/ are mapped to ``hashcoop.pool``,
``hashcoop.stratum`` and ``hashcoop.payouts`` (pyproject.toml,
``[tool.setuptools] package-dir``). A wheel that put ``pool`` or
``stratum`` at the top level of site-packages would clash with other
projects of those names in the same environment."""
import os
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

from tests.procs import ROOT

BARE = ("pool", "stratum", "payouts")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_package_list_names_every_package_folder():
    """pyproject's explicit list (setuptools cannot prefix what it finds)
    holds exactly the folders that have an __init__.py."""
    st = _pyproject()["tool"]["setuptools"]
    folders = {"hashcoop." + ".".join(p.parent.relative_to(ROOT).parts)
               for top in BARE for p in (ROOT / top).rglob("__init__.py")}
    assert set(st["packages"]) == folders
    assert st["package-dir"] == {f"hashcoop.{t}": t for t in BARE}


def test_an_installed_copy_imports_nothing_under_the_bare_names(tmp_path):
    """``pip install .`` into an empty target; then, from a directory
    outside the repository and with only that target and the dependencies
    on the path, every module of the package imports, from the target, and
    no module named pool, stratum or payouts is loaded."""
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                        "--target", str(target), str(ROOT)], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PIP_NO_INPUT="1"))
    assert r.returncode == 0, r.stdout + r.stderr
    top = {p.name for p in target.iterdir()}
    assert {n for n in top if not n.endswith(".dist-info")} <= {"hashcoop", "bin"}, top
    assert not (target / "hashcoop" / "__init__.py").exists()  # a namespace: room for other hashcoop.* distributions
    assert (target / "hashcoop/pool/accounting/scripts").is_dir()  # package data came along
    assert (target / "hashcoop/payouts/migrations/versions").is_dir()
    probe = """
import importlib, pkgutil, sys
target, deps = sys.argv[1], sys.argv[2]
sys.path[:] = [target, deps] + [p for p in sys.path if p.endswith(".zip") or "lib-dynload" in p or p.endswith("python3.11")]
import hashcoop
bad = []
for part in ("pool", "stratum", "payouts"):
    pkg = importlib.import_module("hashcoop." + part)
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        if ".migrations." in m.name:  # Alembic's scripts: alembic loads them, they run on import
            continue
        mod = importlib.import_module(m.name)
        if not mod.__file__.startswith(target):
            bad.append(mod.__file__)
bare = sorted(n for n in sys.modules if n.split(".")[0] in ("pool", "stratum", "payouts"))
assert not bare, bare
assert not bad, bad
print(len([n for n in sys.modules if n.startswith("hashcoop.")]))
"""
    deps = sysconfig.get_paths()["purelib"]
    r = subprocess.run([sys.executable, "-S", "-c", probe, str(target), deps], capture_output=True, text=True,
                       cwd=tmp_path, timeout=300, env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert int(r.stdout.split()[-1]) > 100  # every module, not an empty package


def test_the_console_script_points_into_the_package():
    assert _pyproject()["project"]["scripts"]["hashcoop"] == "hashcoop.pool.app.cli:main"
    assert Path(ROOT / "pool/app/cli.py").is_file()
