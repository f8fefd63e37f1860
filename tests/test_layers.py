"""The house drawn from its imports (every import, also those inside functions): the results
layer at the bottom imports nothing of the project; trainables/ nothing of analysis/ or
study/; no module imports itself back through others."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("resultstore", "trainables", "study", "analysis")


def _graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (package __init__s as their package name)."""
    out = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            mod = ".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            deps = set()
            for node in ast.walk(ast.parse(f.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                deps |= {n for n in names if n.split(".")[0] in PACKAGES}
            out[mod] = deps
    return {m: {d for d in deps if d in out and d != m} for m, deps in out.items()}


def test_the_results_layer_imports_nothing_above_it():
    up = {m: sorted(d for d in deps if not d.startswith("resultstore"))
          for m, deps in _graph().items() if m.startswith("resultstore")}
    assert {m: d for m, d in up.items() if d} == {}


def test_trainables_import_neither_analysis_nor_the_driver():
    up = {m: sorted(d for d in deps if d.split(".")[0] in ("analysis", "study"))
          for m, deps in _graph().items() if m.startswith("trainables")}
    assert {m: d for m, d in up.items() if d} == {}


def test_no_import_cycle():
    graph = _graph()
    for m in graph:                         # a package's __init__ re-exports its modules
        graph[m] = {d for d in graph[m] if not d.startswith(m + ".")}
    seen, stack, cycles = set(), [], []

    def visit(m):
        if m in stack:
            cycles.append(stack[stack.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            visit(d)
        stack.pop()

    for m in sorted(graph):
        visit(m)
    assert cycles == []
