"""The one registry of baselines and families: the schema, the rules and the report agree."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from routerr1.methods import (
    BASELINES,
    FAMILY_ORDER,
    NO_INTERVAL_FAMILIES,
    ROUTING_FAMILIES,
    SWEEP_FAMILIES,
    baseline_outputs,
    check_single_rows,
    derived_baselines,
)

REPO = Path(__file__).resolve().parents[1]


def _rules_text() -> str:
    return "\n".join(p.read_text() for p in sorted((REPO / "workflow" / "rules").glob("*.smk")))


def test_schema_enum_is_the_registry():
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    baselines = schema["properties"]["eval"]["properties"]["baselines"]
    assert baselines["items"]["enum"] == list(BASELINES)
    assert set(baselines["default"]) <= set(BASELINES)


def test_every_baseline_has_a_rule_that_writes_it():
    rules = _rules_text()
    derived = set(derived_baselines())
    assert derived and derived <= set(BASELINES)
    for name, b in BASELINES.items():
        pattern = "results/eval/baselines/{baseline}.parquet" if name in derived else b.output
        assert f'"{pattern}"' in rules, (name, pattern)
    # the derive_baseline rule accepts exactly the derived names
    assert 'baseline="|".join(derived_baselines())' in rules


def test_families_are_ordered_once_each():
    families = [b.family for b in BASELINES.values()]
    assert len(set(families)) == len(families)
    assert FAMILY_ORDER[: len(SWEEP_FAMILIES)] == SWEEP_FAMILIES
    assert sorted(FAMILY_ORDER) == sorted([*SWEEP_FAMILIES, *families])
    assert set(ROUTING_FAMILIES) >= set(SWEEP_FAMILIES)
    assert set(NO_INTERVAL_FAMILIES) == {"single", "largest", "oracle"}


def test_baseline_outputs_follow_the_registry_order():
    outs = baseline_outputs(["knn", "single", "prompt_router"], ["b", "a"])
    assert outs == [
        "results/eval/single/a.parquet",
        "results/eval/single/b.parquet",
        "results/eval/prompt_router/untrained.parquet",
        "results/eval/baselines/knn.parquet",
    ]
    with pytest.raises(ValueError, match=re.escape("unknown name(s) ['nope']")):
        baseline_outputs(["nope"], [])


def test_check_single_rows_names_the_problem():
    rows = pd.DataFrame({"method": ["single:a", "router-r1@a0.5"], "em": [1.0, 0.0]})
    with pytest.raises(ValueError, match="rows: missing column"):
        check_single_rows(rows, ["method", "cost"], "rows")
    with pytest.raises(ValueError, match="rows: empty"):
        check_single_rows(rows.iloc[:0], ["method"], "rows")
    with pytest.raises(ValueError, match="'router-r1@a0.5' is not 'single:<pool name>'"):
        check_single_rows(rows, ["method"], "rows")
    check_single_rows(rows.iloc[:1], ["method", "em"], "rows")
