"""Config validation: bad input is refused with the offending key named."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from routerr1.config import (
    ConfigError,
    alpha_label,
    extended_pool_config,
    load_config,
    load_configs,
    pool_entries,
    rollout_config,
    train_config,
    validate_config,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def raw() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_default_config_validates_and_fills_defaults(raw):
    cfg = validate_config(raw)
    assert cfg["rollout"]["top_p"] == 1.0  # filled from the schema
    assert len(cfg["train"]["alphas"]) >= 3
    entries = pool_entries(cfg)
    assert [e.name for e in entries][-1] == "Qwen2.5-Coder-1.5B"
    assert entries[1].prompt_style == "fewshot"
    assert train_config(cfg).cost_on_correct_only is True
    assert rollout_config(cfg).max_turns == cfg["rollout"]["max_turns"]


def test_paper_defaults_not_mutated(raw):
    before = copy.deepcopy(raw)
    validate_config(raw)
    assert raw == before


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda c: c["train"].update(alphas=[0.0, 1.5]), "train.alphas.1"),
        (lambda c: c["train"].update(max_steps="many"), "train.max_steps"),
        (lambda c: c.update(unknown_key=1), "unknown_key"),
        (lambda c: c["pool"][0].pop("price_in"), "price_in"),
        (lambda c: c["pool"][1].update(price_out=-1), "pool.1.price_out"),
        (lambda c: c["pool"][1].update(model="nope"), "pool[1].model"),
        (lambda c: c["pool"][1].update(name=c["pool"][0]["name"].lower()), "pool[1].name"),
        (lambda c: c["pool"][2].update(name="Bad: name"), "pool.2.name"),
        (lambda c: c["policy"].update(model="nope"), "policy.model"),
        (lambda c: c.update(data_mirror="/definitely/not/here"), "data_mirror"),
        (lambda c: c["models"]["smollm2-135m"]["source"].pop("sha256"), "sha256"),
        (lambda c: c["models"]["smollm2-135m"]["source"].update(kind="ftp"), "kind"),
        (lambda c: c["pool"][3].update(prompt="router-r1"), "pool[3].prompt: unknown pool prompt"),
        (lambda c: c["pool"][3].update(extract="regex"), "pool[3].extract: unknown answer"),
        (lambda c: c["pool"][3].update(prompt=7), "pool.3.prompt"),
        # Gemma is a base model prompted few-shot: it cannot follow the reasoning instruction
        (lambda c: c["pool"][1].update(prompt="reason"), "models.gemma3-270m.prompt_style"),
        (lambda c: c["pool"][0].update(prompt="reason"), "pool[0].chat_examples"),
        (
            lambda c: c["pool_unseen"].append({**c["pool"][3], "name": "Q", "prompt": "x"}),
            "pool_unseen[0].prompt",
        ),
    ],
)
def test_bad_config_names_the_key(raw, mutate, needle):
    mutate(raw)
    with pytest.raises(ConfigError) as err:
        validate_config(raw)
    assert needle in str(err.value)


def test_load_config_applies_overrides(tmp_path, raw):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path, {"data_mirror": str(tmp_path)})
    assert cfg["data_mirror"] == str(tmp_path)


def test_alpha_label_is_stable():
    assert alpha_label(0) == "0.0"
    assert alpha_label(0.5) == "0.5"
    assert float(alpha_label(0.9)) == 0.9


def test_cli_check_config_reports_the_key(tmp_path, raw, capsys):
    from routerr1.cli import main

    assert main(["check-config", str(REPO / "config" / "config.yaml")]) == 0
    assert "Qwen2.5-Coder-1.5B" in capsys.readouterr().out
    raw["pool"][0]["price_out"] = "cheap"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    assert main(["check-config", str(bad)]) == 2
    assert "pool.0.price_out" in capsys.readouterr().err
    assert main(["no-such-command"]) == 2


@pytest.mark.parametrize(
    "overlays",
    [
        ["cpu-long.yaml"],
        ["policy-qwen0.5b.yaml"],
        ["cpu-routing.yaml"],
        ["cpu-routing.yaml", "cpu-routing-unseen.yaml"],
        ["cpu-routing.yaml", "cpu-routing-learn.yaml"],
    ],
)
def test_overlays_validate_on_top_of_the_default(overlays):
    cfg = load_configs([REPO / "config" / "config.yaml", *(REPO / "config" / o for o in overlays)])
    assert cfg["warm_start"]["enabled"] is True
    train_config(cfg)
    rollout_config(cfg)
    # the unseen model joins only at evaluation, and must be new to the training pool
    trained = {p["name"] for p in cfg["pool"]}
    unseen = {p["name"] for p in cfg["pool_unseen"]}
    assert not trained & unseen
    if unseen:
        assert {p["name"] for p in extended_pool_config(cfg)["pool"]} == trained | unseen


def test_one_model_may_join_the_pool_twice_with_two_prompts(raw):
    raw["pool"].append(
        {**raw["pool"][3], "name": "Qwen-1.5B-Reason", "aliases": [], "prompt": "reason",
         "max_new_tokens": 256}
    )  # fmt: skip
    entries = {e.name: e for e in pool_entries(validate_config(raw))}
    direct, reason = entries["Qwen2.5-Coder-1.5B"], entries["Qwen-1.5B-Reason"]
    assert direct.model == reason.model
    assert (direct.prompt, direct.extract) == ("short", None)
    assert (reason.prompt, reason.extract, reason.max_new_tokens) == ("reason", None, 256)


def test_a_built_wheel_carries_the_schema(tmp_path):
    """A non-editable install validates configs without the repository's workflow tree."""
    import subprocess
    import sys
    import zipfile

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(tmp_path), str(REPO)],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("routerr1-*.whl")
    archive = zipfile.ZipFile(wheel)
    assert {"routerr1/config/__init__.py", "routerr1/config/schema.py"} <= set(archive.namelist())
    packaged = archive.read("routerr1/config.schema.yaml").decode()
    assert packaged == (REPO / "workflow" / "schemas" / "config.schema.yaml").read_text()


def test_load_configs_merges_nested_keys_as_snakemake_does(tmp_path):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("rollout:\n  max_turn_tokens: 192\n")
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg = load_configs([REPO / "config" / "config.yaml", overlay], {"data_mirror": None})
    assert cfg["rollout"]["max_turn_tokens"] == 192  # the later file wins
    assert cfg["rollout"]["max_final_tokens"] == base["rollout"]["max_final_tokens"]  # kept
