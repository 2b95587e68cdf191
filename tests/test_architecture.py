"""The package's layering, checked on the source: imports point down the layer list only, no cycles,
no eeutils import hidden inside a function, and every family fact read from the ArchSpec table."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "eeutils"

# docs/DESIGN.md: a module may import from its own layer or the layers before it, never after.
LAYERS = ("core", "arch", "workloads", "lens", "analysis", "decoding", "bench", "notebook", "course", "zoo")
# top-level modules that belong to a layer: the version string, and the public facades that only re-export
TOP_LEVEL = {"eeutils._version": "core", "eeutils.metrics": "analysis", "eeutils.exits": "analysis",
             "eeutils.series": "notebook"}
# function-local eeutils imports that are allowed, with the reason (none today)
LOCAL_IMPORT_ALLOWED: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


MODULES = _modules()


def _is_package(mod: str) -> bool:
    return MODULES.get(mod, Path()).name == "__init__.py"


def _resolve(mod: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".") if _is_package(mod) else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(mod: str) -> list[tuple[str, bool, int]]:
    """(imported eeutils module, imported inside a function?, line) for every import in `mod`."""
    tree = ast.parse(MODULES[mod].read_text())
    out = []

    def visit(node, local):
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for a in child.names:
                    if a.name == "eeutils" or a.name.startswith("eeutils."):
                        out.append((a.name, local, child.lineno))
            elif isinstance(child, ast.ImportFrom):
                target = _resolve(mod, child)
                if target == "eeutils" or target.startswith("eeutils."):
                    for a in child.names:
                        sub = f"{target}.{a.name}"
                        out.append((sub if sub in MODULES else target, local, child.lineno))
            visit(child, inner)
    visit(tree, False)
    return out


def layer_of(mod: str) -> str | None:
    if mod in TOP_LEVEL:
        return TOP_LEVEL[mod]
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


GRAPH = {m: _imports(m) for m in MODULES}


def test_every_module_has_a_layer():
    orphans = [m for m in MODULES if m != "eeutils" and layer_of(m) is None]
    assert not orphans, f"modules outside the layers {LAYERS}: {orphans} (add them to a subpackage or TOP_LEVEL)"


def test_imports_point_down_only():
    bad = []
    for mod, imports in GRAPH.items():
        if mod == "eeutils":  # the root facade re-exports the public API
            continue
        for target, _, line in imports:
            if target == "eeutils":
                bad.append(f"{mod}:{line} imports the root package facade")
                continue
            src, dst = LAYERS.index(layer_of(mod)), LAYERS.index(layer_of(target))
            if dst > src:
                bad.append(f"{mod}:{line} ({LAYERS[src]}) imports {target} ({LAYERS[dst]}), a later layer")
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    edges = {m: sorted({t for t, _, _ in imps if t in MODULES and t != m}) for m, imps in GRAPH.items()}
    state, stack, cycles = {}, [], []

    def dfs(m):
        state[m] = 1
        stack.append(m)
        for t in edges[m]:
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                dfs(t)
        stack.pop()
        state[m] = 2
    for m in edges:
        if m not in state:
            dfs(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_function_local_eeutils_imports():
    local = [f"{m}:{line} imports {t} inside a function" for m, imps in GRAPH.items() for t, is_local, line in imps
             if is_local and (m, t) not in LOCAL_IMPORT_ALLOWED]
    assert not local, "\n".join(local)


def test_core_and_workload_types_import_nothing_else():
    for mod in [m for m in MODULES if layer_of(m) == "core"] + ["eeutils.workloads.types"]:
        others = [t for t, _, _ in GRAPH[mod] if layer_of(t) != "core"]
        assert not others, f"{mod} imports {others}"


def test_the_checker_sees_a_violation(tmp_path):
    """The import resolver finds relative, absolute and function-local imports (so the tests above can fail)."""
    src = "from ..notebook import plotting\ndef f():\n    from eeutils.bench import runner\n"
    tree_mod = "eeutils.lens.readout"
    node = ast.parse(src)
    found = []
    for n in ast.walk(node):
        if isinstance(n, ast.ImportFrom):
            found.append(_resolve(tree_mod, n))
    assert found == ["eeutils.notebook", "eeutils.bench"]
    assert LAYERS.index(layer_of("eeutils.notebook.plotting")) > LAYERS.index(layer_of(tree_mod))


# ---- family facts come from the table ------------------------------------------------------------
# config keys and model_type lists that used to be spread over the decoder, its evaluation and the loaders
FAMILY_FACT_PATTERNS = ("num_local_experts", "n_routed_experts", "moe_topk", "\"falcon_mamba\"", "\"jamba\"",
                        "embedding_multiplier", "kv_a_proj_with_mqa", "logits_scaling", "final_logit_softcapping")
# the table, and the zoo (which defines its own architectures' configs)
FAMILY_FACT_HOMES = ("eeutils.arch.table", "eeutils.arch.params", "eeutils.zoo")


@pytest.mark.parametrize("pattern", FAMILY_FACT_PATTERNS)
def test_family_facts_live_in_the_table(pattern):
    where = [m for m, p in MODULES.items() if not m.startswith(FAMILY_FACT_HOMES) and pattern in p.read_text()]
    assert not where, f"{pattern} appears outside the ArchSpec table: {where}"


def test_every_table_row_has_a_tiny_model_or_a_reason():
    import tiny_models as tm
    from eeutils.arch import ADAPTERS

    missing = sorted(set(ADAPTERS) - set(tm.CONFIGS) - set(tm.NO_TINY_CONFIG))
    assert not missing, f"table rows without a tiny test model (add a config to tests/tiny_models.py): {missing}"
    assert not set(tm.CONFIGS) - set(ADAPTERS), "tiny configs for model types the table does not know"


def test_zoo_recipe_families_are_table_families():
    import transformers

    from eeutils.arch import ADAPTERS, FAMILIES
    from eeutils.zoo.build import ZOO

    for r in ZOO:
        assert r.family in FAMILIES, (r.name, r.family)
        model_type = getattr(transformers, r.class_name).config_class.model_type
        assert ADAPTERS[model_type].family == r.family, (r.name, model_type)
