"""Private names stay private, checked on the source like the layer test (tests/test_architecture.py).

A leading underscore means "this module's business". Inside eeutils/ and benchmarks/, no module imports
another module's private name (`from x import _name`) or reaches it as an attribute (`x._name`); a name
several modules need is public in the module that owns it. A private *module* (`eeutils._version`,
`workloads._stdlib_docs`, `benchmarks/_floor.py`) may be imported inside the package that holds it.
Dunder names (`__version__`, `__file__`) are not private. tests/ are white-box and may read internals.
The public facades (eeutils/metrics.py, exits.py, series.py) re-export public names only.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("eeutils", "benchmarks")

# (importing module, private name as "module._name") still allowed. Every entry is in a file that another
# change of issue 26 is rewriting now (the importer, or the module that would have to make the name public).
ALLOWED: frozenset[tuple[str, str]] = frozenset({
})


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for root in SCANNED for p in sorted((ROOT / root).rglob("*.py"))}


MODULES = _modules()


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _package(mod: str) -> str:
    return mod if MODULES.get(mod, Path()).name == "__init__.py" else mod.rpartition(".")[0]


def _resolve(mod: str, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names; benchmarks/ scripts import their siblings by bare name."""
    if node.level:
        base = _package(mod).split(".")
        base = base[: len(base) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))
    name = node.module or ""
    if mod.startswith("benchmarks.") and f"benchmarks.{name}" in MODULES:
        return f"benchmarks.{name}"
    return name


def _ours(target: str) -> bool:
    return target.split(".")[0] in SCANNED


def _private_module_ok(mod: str, target: str) -> bool:
    """Every private module on the path `target` is held by a package that also holds `mod`."""
    parts = target.split(".")
    holders = [".".join(parts[:i]) for i, p in enumerate(parts) if _is_private(p)]
    return all(mod == h or mod.startswith(h + ".") for h in holders)


def _check_name(mod: str, target: str, name: str, line: int, out: list) -> None:
    """Record `target.name` when it is another module's private name, or a module private to another package."""
    full = f"{target}.{name}"
    if target == mod:
        return
    if full in MODULES:
        if not _private_module_ok(mod, full):
            out.append((mod, full, line))
    elif _is_private(name) or not _private_module_ok(mod, target):
        out.append((mod, full, line))


def violations_in(mod: str, source: str) -> list[tuple[str, str, int]]:
    """(importing module, private "module._name", line) for each private name `mod` takes from another module."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}  # local name -> our module it is bound to
    out: list[tuple[str, str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(mod, node)
            if not _ours(target):
                continue
            for a in node.names:
                if f"{target}.{a.name}" in MODULES:
                    aliases[a.asname or a.name] = f"{target}.{a.name}"
                _check_name(mod, target, a.name, node.lineno, out)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if _ours(a.name):
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                    parent, _, last = a.name.rpartition(".")
                    if parent:
                        _check_name(mod, parent, last, node.lineno, out)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            target = _dotted(node.value, aliases)
            if target is not None and target in MODULES:
                _check_name(mod, target, node.attr, node.lineno, out)
    return out


def _dotted(node, aliases: dict[str, str]) -> str | None:
    """The module an expression like `K` or `eeutils.lens.kernel` names, through the import aliases."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value, aliases)
        return f"{base}.{node.attr}" if base is not None else None
    return None


def _all_violations() -> list[tuple[str, str, int]]:
    return [v for mod, path in MODULES.items() for v in violations_in(mod, path.read_text(encoding="utf-8"))]


def test_no_private_name_is_imported_across_modules():
    found = _all_violations()
    bad = [f"{m}:{line} uses {name}" for m, name, line in found if (m, name) not in ALLOWED]
    assert not bad, ("private names used across modules (make the name public where it lives, or move the "
                     "code that needs it there):\n" + "\n".join(bad))


def test_the_allowlist_has_no_stale_entries():
    stale = ALLOWED - {(m, name) for m, name, _ in _all_violations()}
    assert not stale, f"allowed private imports that no longer happen (remove them from ALLOWED): {sorted(stale)}"


def test_public_facades_re_export_public_names_only():
    for facade in ("eeutils.metrics", "eeutils.exits", "eeutils.series"):
        tree = ast.parse(MODULES[facade].read_text(encoding="utf-8"))
        names = [a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names]
        private = [n for n in names if _is_private(n)]
        assert not private, f"{facade} re-exports private names {private}"


def test_the_checker_sees_each_kind_of_violation():
    src = ("from .kernel import _record, public\n"
           "from eeutils.lens import kernel as K\n"
           "import eeutils.lens.readout\n"
           "from .. import _version\n"
           "from ..workloads import _stdlib_docs\n"
           "x = K._LSE + K.__name__.count('.')\n"
           "y = eeutils.lens.readout._helper\n"
           "def _mine():\n    return _mine\n")
    found = sorted((name, line) for _, name, line in violations_in("eeutils.lens.cache", src))
    assert found == [("eeutils.lens.kernel._LSE", 6), ("eeutils.lens.kernel._record", 1),
                     ("eeutils.lens.readout._helper", 7), ("eeutils.workloads._stdlib_docs", 5)]
    assert violations_in("eeutils.lens.kernel", "from .kernel import _record\n") == []
    assert violations_in("benchmarks.readout_bench", "from _floor import floor\n") == []
    assert violations_in("benchmarks.readout_bench", "from eeutils.lens.kernel import _LSE\n") == \
        [("benchmarks.readout_bench", "eeutils.lens.kernel._LSE", 1)]
