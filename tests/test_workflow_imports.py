"""Parsing the Snakefile imports the library, but never torch (seconds per parse, and a CPU-only
submit host may not even have it)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_modules_the_rules_import_leave_torch_alone():
    text = "\n".join(
        p.read_text()
        for p in [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    )
    # top-level imports only: imports inside onstart/run blocks happen in jobs, not at parse
    modules = sorted(set(re.findall(r"^from (routerr1[\w.]*) import", text, re.M)))
    assert "routerr1.config" in modules
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules)
    code += "print(sorted(m for m in ('torch', 'transformers', 'trl') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", (modules, out.stdout)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The routerr1 modules ``path`` imports anywhere (function-level imports included)."""
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module in modules:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names} & modules
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names} & modules
    return found


def test_the_library_has_no_import_cycle():
    src = REPO / "src"
    files = {
        ".".join(p.relative_to(src).with_suffix("").parts).removesuffix(".__init__"): p
        for p in (src / "routerr1").rglob("*.py")
    }
    graph = {m: _imports(p, set(files)) - {m} for m, p in files.items()}
    # config (a package) is the root every module may build on: of ours it imports at most the
    # prompt registry (to check pool[].prompt names) and what that registry's extractors need,
    # none of which imports anything else of ours
    config = {m for m in graph if m == "routerr1.config" or m.startswith("routerr1.config.")}
    assert len(config) > 1
    prompt_registry = {"routerr1.pool.messages", "routerr1.pool.program"}
    outside = set().union(*(graph[m] for m in config)) - config
    assert outside <= prompt_registry
    assert all(graph[m] <= prompt_registry for m in prompt_registry)
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(module) :]))
        if module in done:
            return
        for dep in sorted(graph[module]):
            visit(dep, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
