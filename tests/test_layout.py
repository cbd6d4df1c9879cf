"""The package layout: folders are pipeline stages and imports point one way, down the pipeline.

Every `import` in `aura/` (lazy ones inside functions included) is read with `ast`; a stage may import
its own package and the stages before it, never one after it, so there is no cycle between packages and,
for example, model code never imports training, evaluation, serving or data generation."""

from __future__ import annotations

import ast
from pathlib import Path

AURA = Path(__file__).resolve().parents[1] / "aura"

# lowest first; names in one tuple share a layer (and may not import each other's layer-mates)
LAYERS: tuple[tuple[str, ...], ...] = (
    ("compat", "config", "metrics", "convert"),
    ("registry",),
    ("audio",),
    ("teacher",),
    ("model",),
    ("data",),
    ("distill",),
    ("train",),
    ("infer",),
    ("eval",),
    ("serve",),
    ("cli",),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
# serving a checkpoint must not load the example generators (fact tables, voices, synthesis engines)
NO_DATA = ("infer", "serve")
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(AURA.rglob("*.py")):
        parts = path.relative_to(AURA.parent).with_suffix("").parts
        out.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return out


def _stage(module: str) -> str:
    """The pipeline stage of `aura.X.Y` (X), or `aura` for the package root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "aura"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "aura":
                found.update(f"aura.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "aura" or name.startswith("aura.")}


def test_every_stage_has_a_layer() -> None:
    stages = {_stage(module) for module, _ in _modules()} - {"aura", "py"}
    assert stages <= set(RANK), f"stages without a layer in LAYERS: {sorted(stages - set(RANK))}"


def test_imports_point_down_the_pipeline() -> None:
    wrong = []
    for module, path in _modules():
        stage = _stage(module)
        for imported in _imports(path):
            target = _stage(imported)
            if target == stage or stage == "aura" and target != "cli":
                continue
            if target == "aura" or RANK[target] >= RANK.get(stage, -1):
                wrong.append(f"{module} imports {imported} ({stage} may not import {target})")
            elif stage in NO_DATA and target == "data":
                wrong.append(f"{module} imports {imported} (serving loads no data generation)")
    assert not wrong, "\n".join(wrong)


def test_modules_and_functions_stay_short() -> None:
    long = []
    for module, path in _modules():
        source = path.read_text()
        if (lines := len(source.splitlines())) > MAX_MODULE_LINES:
            long.append(f"{module}: {lines} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = node.end_lineno - node.lineno + 1
                if size > MAX_FUNCTION_LINES:
                    long.append(f"{module}.{node.name} (line {node.lineno}): {size} lines")
    assert not long, "\n".join(long)
