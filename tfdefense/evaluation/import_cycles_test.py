"""No import cycle among the modules of tfdefense.evaluation (presets included).

Every import statement counts, at module level or inside a function; importing
`a.b.c` also imports the packages `a.b` and `a` (their `__init__`). The preset
registry imports the built-in presets by module name (importlib), which is not
an import statement: presets import the registry, never the reverse.
"""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1]  # tfdefense/
EVALUATION = PACKAGE / "evaluation"


def _module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(name, path, modules):
    """The modules of `modules` that the import statements of module `name` (file `path`) load."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            targets = [
                f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module for alias in node.names
            ]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # the module and the packages above it
                imported = ".".join(parts[:i])
                if imported in modules and imported != name:
                    yield imported


def import_graph(root=EVALUATION):
    files = {_module_name(p): p for p in sorted(root.rglob("*.py")) if not p.name.endswith("_test.py")}
    return {name: set(_imported(name, path, files)) for name, path in files.items()}


def find_cycle(graph):
    """One import cycle of `graph` as a list of modules [a, b, ..., a], or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_checker_finds_a_cycle_and_the_parent_package_edge():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    modules = {"p": None, "p.x": None, "p.y": None}
    source = PACKAGE / "evaluation" / "runner.py"  # any module: only its name matters below
    imported = set(_imported("p.y", source, modules))
    assert imported == set()  # runner.py imports nothing named p.*
    graph = {"p": {"p.x"}, "p.x": {"p.y"}, "p.y": {"p"}}  # a package __init__ importing its modules
    assert find_cycle(graph) == ["p", "p.x", "p.y", "p"]


def test_the_graph_sees_the_registry_and_the_presets():
    graph = import_graph()
    assert "tfdefense.evaluation.preset_registry" in graph["tfdefense.evaluation.presets.robust"]
    assert "tfdefense.evaluation.presets" in graph["tfdefense.evaluation.presets.robust"]  # its package
    assert "tfdefense.evaluation.preset_registry" in graph["tfdefense.evaluation.runner"]
    assert not any(name.startswith("tfdefense.evaluation.presets") for name in graph["tfdefense.evaluation.runner"])


def test_no_import_cycle_among_the_evaluation_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
