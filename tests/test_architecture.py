"""The floors of docs/architecture.md, enforced: imports point down only, the review and the vocabulary import no
torch, the pure-torch core and one run import no Lightning, and no module is part of an import circle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lightning_cnnsee"

#: What each floor may import from the package (its own folder always), top to bottom.
MAY_IMPORT = {
    "cli": {"__init__", "demo", "review"},  # the facade: names imported inside the commands, on first use
    "demo": {"callback", "vocabulary"},
    "callback": {"sinks", "render", "run", "explain", "vocabulary"},
    "sinks": {"vocabulary"},
    "render": {"run", "explain", "vocabulary"},
    "run": {"explain", "vocabulary"},
    "explain": {"vocabulary"},
    "review": {"vocabulary"},
    "vocabulary": set(),
}
#: Floors that import neither torch nor Lightning (the review runs without them; cli starts without them).
TORCH_FREE = {"vocabulary", "review", "cli"}
HEAVY = {"torch", "torchvision", "lightning", "pytorch_lightning", "numpy"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path) -> list[tuple[str, int, bool]]:
    """``(imported module, line, at module level)`` for every import in ``path``, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names]
            # "from pkg import module" imports the module; "from module import name" imports the module
            targets = [name if _is_module(name) else base for name in names]
            found += [(target, node.lineno, id(node) in top_level) for target in targets]
    return found


def _is_module(name: str) -> bool:
    if not name.startswith("lightning_cnnsee"):
        return False
    relative = Path(*name.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").exists() or (PACKAGE / relative / "__init__.py").exists()


MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


def upward_imports() -> list[str]:
    wrong = []
    for path in MODULES:
        floor = floor_of(module_name(path))
        if floor == "__init__":
            continue  # the facade names everything, lazily
        for target, line, _ in imports_of(path):
            if target != "lightning_cnnsee" and not target.startswith("lightning_cnnsee."):
                continue
            other = floor_of(target)  # "__init__" for the facade, which names every floor
            if other != floor and other not in MAY_IMPORT[floor]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({floor}) imports {target} ({other})")
    return wrong


def test_a_module_importing_through_the_facade_is_caught(tmp_path, monkeypatch):
    """``from lightning_cnnsee import CNNSee`` in the core is as much an upward import as the module path."""
    fake = tmp_path / "lightning_cnnsee"
    (fake / "explain").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "explain" / "cam.py").write_text("from lightning_cnnsee import CNNSee\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    monkeypatch.setattr(sys.modules[__name__], "MODULES", sorted(fake.rglob("*.py")))
    assert upward_imports() == ["lightning_cnnsee/explain/cam.py:1 (explain) imports lightning_cnnsee (__init__)"]


def test_every_module_sits_on_a_known_floor():
    floors = {floor_of(module_name(path)) for path in MODULES} - {"__init__"}
    assert floors == set(MAY_IMPORT)


def test_imports_point_down_only():
    assert upward_imports() == []


def test_upward_import_is_caught(tmp_path, monkeypatch):
    """The check itself fails on an import that points up (a core module importing the callback)."""
    fake = tmp_path / "lightning_cnnsee"
    (fake / "explain").mkdir(parents=True)
    (fake / "callback").mkdir()
    (fake / "callback" / "cnnsee.py").write_text("")
    (fake / "explain" / "cam.py").write_text("from lightning_cnnsee.callback.cnnsee import CNNSee\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    monkeypatch.setattr(sys.modules[__name__], "MODULES", sorted(fake.rglob("*.py")))
    assert upward_imports() == [
        "lightning_cnnsee/explain/cam.py:1 (explain) imports lightning_cnnsee.callback.cnnsee (callback)"
    ]


@pytest.mark.parametrize("floor", sorted(TORCH_FREE))
def test_torch_free_floors_import_no_torch(floor):
    for path in MODULES:
        if floor_of(module_name(path)) != floor:
            continue
        heavy = [(t, line) for t, line, top in imports_of(path) if top and t.split(".")[0] in HEAVY]
        assert heavy == [], f"{path.relative_to(PACKAGE.parent)} imports {heavy}"


def test_review_and_cli_load_without_torch_or_lightning():
    code = (
        "import sys, lightning_cnnsee, lightning_cnnsee.cli, lightning_cnnsee.review, "
        "lightning_cnnsee.vocabulary.tags, lightning_cnnsee.vocabulary.choices; "
        "print(sorted(m for m in ('torch', 'lightning', 'pytorch_lightning') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_core_and_run_load_without_lightning():
    code = (
        "import sys, lightning_cnnsee.run.visualization, lightning_cnnsee.render.images, "
        "lightning_cnnsee.render.scalars, lightning_cnnsee.sinks.writers; "
        "print(sorted(m for m in ('lightning', 'pytorch_lightning') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def import_circles() -> list[list[str]]:
    graph: dict[str, set[str]] = {}
    for path in MODULES:
        name = module_name(path)
        graph[name] = {t for t, _, top in imports_of(path) if top and t.startswith("lightning_cnnsee.") and t != name}
    circles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                circles.append(stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return circles


def test_no_import_circles():
    assert import_circles() == []
