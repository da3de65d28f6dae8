"""The package layout (docs/architecture.md): imports run one way, from the CLI down, and there is
no import circle anywhere in ``ctemplate/``.

Every ``import`` statement counts, also those inside functions (a lazy import is still a
dependency) and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ctemplate

PACKAGE = Path(ctemplate.__file__).parent

# Stages, lowest first. A module may import modules of its own stage or of a lower one.
STAGES: dict[str, int] = {
    "errors": 0,
    "paths": 0,
    "config": 1,
    "consul": 2,
    "output": 2,
    "language": 3,
    "runner": 4,
    "status": 4,
    "modes": 4,
    "cli": 5,
    "__init__": 5,
    "__main__": 5,
}
# Pairs of stages that must not know each other, whatever their ranks.
APART = {("output", "consul"), ("consul", "output"), ("output", "language")}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """The ``ctemplate`` modules ``path`` imports, resolved to absolute names."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "ctemplate")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != "ctemplate":
                continue
            # `from . import local` imports the submodule `local`.
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if _exists(sub) else target)
    found.discard(name)
    return found


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_belongs_to_a_known_stage() -> None:
    unknown = sorted({_stage(m) for m in _graph()} - set(STAGES))
    assert not unknown, f"add these to STAGES and to docs/architecture.md: {unknown}"


def test_imports_run_one_way_from_the_cli_down() -> None:
    upward = []
    for module, targets in _graph().items():
        for target in sorted(targets):
            a, b = _stage(module), _stage(target)
            if a == b:
                continue
            if STAGES[b] > STAGES[a] or (a, b) in APART:
                upward.append(f"{module} imports {target} ({a} must not import {b})")
    assert not upward, "\n".join(upward)


def test_no_import_circles() -> None:
    graph = _graph()
    done: set[str] = set()
    circles: list[str] = []

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            circles.append(" -> ".join([*path[path.index(module) :], module]))
            return
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            # A submodule importing its own package's __init__ is how Python loads it, not a circle.
            if module.startswith(target + "."):
                continue
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_checks_see_a_real_upward_import(tmp_path: Path) -> None:
    # The walker itself: a relative import two levels up is resolved to the right module.
    source = PACKAGE / "output" / "write.py"
    assert "ctemplate.errors" in _imports(source)
    assert _stage("ctemplate.consul.watch") == "consul"
    assert STAGES["consul"] > STAGES["config"]
