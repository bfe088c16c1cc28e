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
    assert "routerr1.baselines" in modules  # the one that once pulled torch in via evaluate
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules)
    code += "print(sorted(m for m in ('torch', 'transformers', 'trl') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", (modules, out.stdout)
