"""The package's boundaries, checked on its source: no import circle, no method named outside
methods/, no channels or pixels outside the image modality (issue: one core for every modality)."""

from __future__ import annotations

import ast
from pathlib import Path

from contrastive.methods import METHODS

PACKAGE = Path(__file__).resolve().parents[1] / "contrastive"


def modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), filename=str(path))
    return out


def imported(tree: ast.Module, name: str, is_package: bool) -> set[str]:
    """Modules of the package that `tree` imports anywhere (lazy imports inside functions too)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                base = ".".join(anchor[:len(anchor) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m.startswith("contrastive")}


def import_graph() -> dict[str, set[str]]:
    trees = modules()
    packages = {n for n in trees if (PACKAGE.parent / n.replace(".", "/") / "__init__.py").exists()}
    return {n: imported(t, n, n in packages) & set(trees) - {n} for n, t in trees.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [node])):
                return cycle
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [])):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle_in_the_package():
    graph = import_graph()
    assert "contrastive.pipeline" in graph and "contrastive.report" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def code_words(tree: ast.Module) -> set[str]:
    """Identifiers and string constants of the code, docstrings and comments left out."""
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    words = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            words.add(node.id)
        elif isinstance(node, ast.Attribute):
            words.add(node.attr)
        elif isinstance(node, ast.arg):
            words.add(node.arg)
        elif isinstance(node, ast.keyword) and node.arg:
            words.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            words.add(node.name)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words.add(node.value)
    return words


def test_no_module_outside_methods_names_a_method():
    names = set(METHODS) | {m.__name__.rsplit(".", 1)[-1] for m in METHODS.values()}
    classes = {"SimCLR", "MoCo", "BYOL"}
    offenders = {}
    for module, tree in modules().items():
        if module.startswith("contrastive.methods") or module.startswith("contrastive.image"):
            continue  # methods/ holds them; the image modality names its view recipes after the papers
        hits = {w for w in code_words(tree) if w.lower() in names or w in classes}
        if hits:
            offenders[module] = sorted(hits)
    assert offenders == {}


def test_no_module_outside_the_image_modality_names_channels_or_pixels():
    offenders = {}
    for module, tree in modules().items():
        # norm.py converts BatchNorm2d layers (a layer type of convolutional encoders, whatever their data).
        if module.startswith("contrastive.image") or module == "contrastive.norm":
            continue
        hits = {w for w in code_words(tree) if "channel" in w.lower() or "pixel" in w.lower()}
        if hits:
            offenders[module] = sorted(hits)
    assert offenders == {}
