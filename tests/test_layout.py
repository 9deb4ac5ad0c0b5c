"""The packages' shape: no import circle inside fiqa_core/ or jobs/, no module over ~300
lines, every ``module:attr`` name resolves, and a run reads as its steps."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fiqa_core", "jobs")
MAX_LINES = 300


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _under_type_checking(node, parents) -> bool:
    return any(isinstance(p, ast.If) and "TYPE_CHECKING" in ast.unparse(p.test)
               for p in parents.get(node, ()))


def imports_of(name: str, path: Path, modules: dict) -> set[str]:
    """Every module of ours that ``name`` imports, at the top or inside a function (a lazy
    import closes a circle all the same); names only a type checker reads do not count."""
    tree = ast.parse(path.read_text())
    parents: dict = {}
    stack = [(tree, ())]
    while stack:
        node, above = stack.pop()
        for child in ast.iter_child_nodes(node):
            parents[child] = above + (node,)
            stack.append((child, above + (node,)))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if _under_type_checking(node, parents):
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circle_in_the_packages():
    modules = _modules()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert graph["jobs.score.job"] >= {"jobs.score.steps", "jobs.score.finish"}  # it reads
    assert "fiqa_core.engines.torch_engine" in graph["fiqa_core.training"]  # lazy ones too
    assert _cycles(graph) == []


def test_the_walker_finds_a_circle_through_a_lazy_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_module_is_over_300_lines():
    long = {n: len(p.read_text().splitlines()) for n, p in _modules().items()}
    assert {n: c for n, c in long.items() if c > MAX_LINES} == {}


def test_every_named_reference_resolves():
    """Engines, presets, the pipeline's stages and the round's runners name their code as
    ``module:attr``, which no import shows: each must exist."""
    from fiqa_core.engines import get_engine, list_engines
    from fiqa_core.extras import named
    from fiqa_core.presets import get_preset, list_presets
    from jobs.score.stages import SCORE_STAGES
    from jobs.self_train.stages import STAGE_DEFS

    refs = [get_preset(p).builder for p in list_presets()]
    for name in list_engines():
        e = get_engine(name)
        refs += [r for r in (e.load, e.read_config, e.convert, e.gpu) if r]
    refs += [s.fn for s in SCORE_STAGES] + [d.runner for d in STAGE_DEFS]
    assert len(refs) >= 15
    for ref in refs:
        assert callable(named(ref)), ref


def test_a_run_reads_as_its_steps():
    import inspect

    from jobs.score import job

    lines = inspect.getsource(job._run).splitlines()
    assert len(lines) <= 30, len(lines)
