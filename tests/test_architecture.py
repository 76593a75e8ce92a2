"""The package's shape: no import cycles, and a small pinned public face."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import smallfleet

PKG = Path(smallfleet.__file__).parent


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for p in PKG.rglob("*.py"):
        parts = ["smallfleet", *p.relative_to(PKG).with_suffix("").parts]
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    return mods


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, at the top or inside a function (a late import
    hides a cycle, it does not remove it). Only ``if TYPE_CHECKING:`` imports are left out."""
    mods = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, (path, is_pkg) in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {id(n) for node in ast.walk(tree)
                       if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in mods and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on_stack.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_late_imports() -> None:
    g = import_graph()
    assert "smallfleet.retrieval.grounded" in g["smallfleet.verify.checks"]  # imported inside a function


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


PUBLIC = [
    "Attempt", "Backend", "BackendError", "BudgetExceededError", "ChatRequest", "ChatResult", "Config", "ConfigError",
    "ContextLengthError", "Engine", "Fleet", "FunctionBackend", "Guard", "InvalidRequestError", "KindPolicy",
    "KnowledgeBase", "Message", "ModelNotFoundError", "ModelSpec", "ModelUnavailableError", "NotAvailableError",
    "Outcome", "PolicyEngine", "Pseudonymizer", "SessionMemory", "SmallfleetError", "Step", "StepKind", "Tool",
    "ToolCall", "Verdict", "chat_completion", "load_config", "register_check",
]


def test_the_public_face_is_pinned() -> None:
    """A name joins or leaves ``import smallfleet`` on purpose: change this list with the README."""
    assert sorted(smallfleet.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        obj = getattr(smallfleet, name)  # the lazy ones load here
        assert obj.__doc__, f"smallfleet.{name} has no docstring"
    internals = {"Cascade", "Router", "run_checks", "Ledger", "LiveStream", "Recorder"}
    assert not internals & set(dir(smallfleet)) - {"__getattr__"}


def test_engine_complete_has_real_parameters() -> None:
    import inspect

    params = inspect.signature(smallfleet.Engine.complete).parameters
    assert not any(p.kind is p.VAR_KEYWORD for p in params.values())
    assert {"step_kind", "run_id", "session_id", "budget_usd", "guard_mode", "kb"} <= set(params)


def test_the_readme_test_double_example_runs_as_written(tmp_path, monkeypatch) -> None:
    import asyncio
    import re

    monkeypatch.chdir(tmp_path)  # no ./smallfleet.toml: the built-in fleet
    for k in ("SMALLFLEET_CONFIG", "SMALLFLEET_SMALL_MODEL", "SMALLFLEET_LARGE_MODEL", "SMALLFLEET_FRONTIER_URL"):
        monkeypatch.delenv(k, raising=False)
    readme = (PKG.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Library\n"):readme.index("\n## ", readme.index("## Library\n") + 5)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    example = next(b for b in blocks if "FunctionBackend" in b)
    ns: dict[str, object] = {}
    exec(compile(example, "README.md", "exec"), ns)
    engine = ns["engine"]
    out = asyncio.run(engine.complete({"messages": [{"role": "user", "content": "Classify: refund please. "  # type: ignore[attr-defined]
                                                      "Answer with one of: refund, shipping, other"}]}))
    assert out.message["content"] == "refund" and out.verdict == "pass"
    asyncio.run(engine.aclose())  # type: ignore[attr-defined]
