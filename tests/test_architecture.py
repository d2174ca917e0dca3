"""The rooms of hashcoop and what each may import (README, "Architecture").

Every module belongs to one room. A room imports only the rooms below it in
``MAY_IMPORT``; that relation has no cycle, so neither has the import graph
between rooms. The graph is grimp's: imports inside functions count too.
Imports inside functions are allowed only with their reason written next to
them (a comment on the line or the line above)."""
from __future__ import annotations

import ast
import graphlib
import sys

import grimp
import pytest

from tests.procs import ROOT

# module prefix -> room; the longest prefix wins
ROOMS = {
    "hashcoop.pool.core": "core",
    "hashcoop.pool": "support",  # config, metrics, transports, rpc: the modules at the top of hashcoop.pool
    "hashcoop.pool.node": "node",
    "hashcoop.pool.accounting": "accounting",
    "hashcoop.pool.http": "http",
    "hashcoop.stratum": "stratum",
    "hashcoop.payouts": "payouts",
    "hashcoop.pool.app": "app",
    "hashcoop.pool.tools": "tools",
}
ADAPTERS = {"stratum", "node", "accounting", "http", "payouts"}
MAY_IMPORT = {
    "core": set(),
    "support": {"core"},
    **{room: {"support", "core"} for room in ADAPTERS},  # not each other: the wiring hands them what they share
    "app": ADAPTERS | {"support", "core"},
    "tools": {"app"} | ADAPTERS | {"support", "core"},
}


def room_of(module: str) -> str:
    best = max((p for p in ROOMS if module == p or module.startswith(p + ".")), key=len)
    return ROOMS[best]


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("hashcoop.pool", "hashcoop.stratum", "hashcoop.payouts")


def test_the_rooms_form_a_dag():
    order = list(graphlib.TopologicalSorter(MAY_IMPORT).static_order())  # raises CycleError on a cycle
    assert order.index("core") == 0 and order[-1] == "tools"
    assert set(ROOMS.values()) == set(MAY_IMPORT)


def test_every_import_goes_down(graph):
    wrong = []
    for importer in sorted(graph.modules):
        a = room_of(importer)
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            b = room_of(imported)
            if a != b and b not in MAY_IMPORT[a]:
                for d in graph.get_import_details(importer=importer, imported=imported):
                    wrong.append(f"{importer}:{d['line_number']} ({a} -> {b}): {d['line_contents']}")
    assert not wrong, "\n".join(wrong)


def test_the_core_imports_only_the_standard_library_and_itself():
    """Pure: no Twisted, no Redis, no SQL, no prometheus, no pydantic. Two
    libraries without I/O are used: python-bitcoinlib (addresses) and orjson
    (the notify's JSON)."""
    allowed_third_party = {"bitcoin", "orjson"}
    found = {}
    for path in (ROOT / "pool/core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            for name in names:
                top = name.split(".")[0]
                if top != "hashcoop" and top not in _stdlib() and top not in allowed_third_party:
                    found.setdefault(top, []).append(str(path.relative_to(ROOT)))
    assert not found, found


def _stdlib() -> frozenset[str]:
    return frozenset(sys.stdlib_module_names) | {"__future__"}


def test_no_import_cycle_between_packages(graph):
    """Between any two packages of the tree (hashcoop.stratum,
    hashcoop.pool.core, hashcoop.pool.node, ...), imports go one way only."""
    packages = sorted(m for m in graph.modules if (ROOT / _folder(m) / "__init__.py").exists()
                      and m not in ("hashcoop.pool",) and ".migrations" not in m)
    both = []
    for i, a in enumerate(packages):
        for b in packages[i + 1:]:
            if b.startswith(a + ".") or a.startswith(b + "."):
                continue  # a package and its own subpackage
            if graph.chain_exists(importer=a, imported=b, as_packages=True) and \
                    graph.chain_exists(importer=b, imported=a, as_packages=True):
                both.append((a, b))
    assert not both, both


def _folder(module: str):
    parts = module.split(".")[1:]
    return ROOT.joinpath(*parts)


def test_imports_inside_functions_say_why():
    silent = []
    for top in ("pool", "stratum", "payouts"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            lines = path.read_text().splitlines()
            seen = set()
            for fn in ast.walk(ast.parse("\n".join(lines))):
                if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)) and node.lineno not in seen:
                        seen.add(node.lineno)
                        here = lines[node.lineno - 1]
                        above = lines[node.lineno - 2].strip()
                        if "#" not in here and not above.startswith("#"):
                            silent.append(f"{path.relative_to(ROOT)}:{node.lineno}: {here.strip()}")
    assert not silent, "\n".join(silent)


def test_the_rules_catch_a_wrong_import(graph):
    """The checks above are not vacuous: the graph holds the rooms' modules,
    and an upward import would be flagged."""
    rooms = {room_of(m) for m in graph.modules}
    assert rooms == set(MAY_IMPORT)
    assert "stratum" not in MAY_IMPORT["core"] and "payouts" not in MAY_IMPORT["http"]
    assert room_of("hashcoop.pool.config") == "support" and room_of("hashcoop.pool.core.btc.address") == "core"
    assert room_of("hashcoop.pool.tools.devnode.chain") == "tools" and room_of("hashcoop.pool.app") == "app"
