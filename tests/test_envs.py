"""Conda envs (workflow/envs/*.yaml) match the pyproject extras; the GPU env is picked per config;
only local-backend models (pool and pool_unseen) have their weights fetched."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from routerr1.config import load_config
from routerr1.workflow import (
    CPU_ENV,
    GPU_ENV,
    POOL_RULES,
    UNSEEN_RULES,
    conda_env,
    fetched_model_keys,
    launches_vllm,
    needs_gpu_env,
    uses_deepspeed,
)

REPO = Path(__file__).resolve().parents[1]
ENVS = REPO / "workflow" / "envs"
RULES = REPO / "workflow" / "rules"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]


def pip_lines(env_file: Path) -> list[str]:
    env = yaml.safe_load(env_file.read_text())
    assert env["channels"] and "python=3.11" in env["dependencies"], env_file.name
    pips = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pips) == 1 and "pip" in env["dependencies"], env_file.name
    return pips[0]


def editable_extras(env_file: Path) -> set[str] | None:
    """Extras of the env's `-e <repo>[...]` line (None: the env does not install routerr1)."""
    for line in pip_lines(env_file):
        m = re.fullmatch(r"-e\s+(\S+?)(?:\[([\w,-]+)\])?", line)
        if m:
            assert (env_file.parent / m[1] / "pyproject.toml").is_file(), line
            return set(m[2].split(",")) if m[2] else set()
    return None


def expand(extras: set[str]) -> set[str]:
    """Requirement names behind extras, following routerr1[...] self-references."""
    names: set[str] = set()
    for extra in extras:
        for req in EXTRAS[extra]:
            self_ref = re.fullmatch(r"routerr1\[([\w,-]+)\]", req)
            if self_ref:
                names |= expand(set(self_ref[1].split(",")))
            else:
                names.add(re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower())
    return names


def pins(extra: str) -> dict[str, str]:
    return dict(r.split("==") for r in EXTRAS[extra] if "==" in r)


def test_every_env_references_existing_extras_and_files():
    files = sorted(ENVS.glob("*.yaml"))
    assert {f.name for f in files} >= {"routerr1.yaml", "routerr1-gpu.yaml", "vllm-serve.yaml"}
    for f in files:
        extras = editable_extras(f)
        assert extras is None or extras <= set(EXTRAS), (f.name, extras)
        for line in pip_lines(f):
            if line.startswith("-c "):
                assert (f.parent / line[3:].strip()).is_file(), (f.name, line)


def test_cpu_env_has_no_gpu_package_and_gpu_env_has_both():
    gpu_only = {"vllm", "deepspeed"}
    cpu = ENVS / "routerr1.yaml"
    assert not expand(editable_extras(cpu)) & gpu_only
    assert "-c ../../constraints.txt" in pip_lines(cpu)  # the tested versions, exactly
    assert expand(editable_extras(ENVS / "routerr1-gpu.yaml")) >= gpu_only
    # vllm pins torch and transformers itself: the GPU env must not force ours
    assert not any(line.startswith("-c ") for line in pip_lines(ENVS / "routerr1-gpu.yaml"))


def test_gpu_extras_are_pinned_and_the_serving_env_matches():
    assert set(pins("vllm")) == {"vllm"} and set(pins("deepspeed")) == {"deepspeed"}
    assert expand({"gpu"}) == {"vllm", "deepspeed"}
    serve = pip_lines(ENVS / "vllm-serve.yaml")
    assert serve == [f"vllm=={pins('vllm')['vllm']}"]
    # the CPU default never pulls a GPU extra in
    assert not expand({"dev"}) & {"vllm", "deepspeed"}


def test_rules_name_existing_envs_and_pool_rules_use_the_selected_one():
    for env in (CPU_ENV, GPU_ENV):
        assert (RULES / env).resolve().is_file(), env
    text = "\n".join(smk.read_text() for smk in RULES.glob("*.smk"))
    for env in re.findall(r"conda:\s*\n\s*\"([^\"]+)\"", text):
        assert (RULES / env).resolve().is_file(), env
    # every rule that builds the pool (or trains) asks rule_env for its own name
    selected = dict(
        re.findall(
            r"^rule (\w+):\n(?:(?!^rule ).*\n)*?\s+conda:\n\s+rule_env\(\"(\w+)\"\)", text, re.M
        )
    )
    derived = {"evaluate_prompt_router", "evaluate_router_unseen_seed"}  # `use rule ... with`
    assert selected == {r: r for r in (POOL_RULES | UNSEEN_RULES) - derived}
    assert "use rule evaluate_router as evaluate_prompt_router" in text  # inherits its env
    assert 'rule_env("evaluate_router_unseen_seed")' in text


def cfg(
    vllm: bool = False,
    launcher: str = "inprocess",
    accel: str | None = None,
    pool: list | None = None,
    unseen: list | None = None,
) -> dict:
    return {
        "vllm": {"enabled": vllm},
        "launch": {"launcher": launcher, "accelerate_config": accel},
        "pool": pool or [{"name": "A", "model": "a", "backend": "local"}],
        "pool_unseen": unseen or [],
    }


SERVED = {"name": "S", "model": "s", "backend": "openai", "serve": "vllm"}
# vllm.command points at another install (e.g. .venv-vllm/bin/vllm): the job env needs no vllm
SERVED_ELSEWHERE = {**SERVED, "vllm": {"command": [".venv-vllm/bin/vllm", "serve"]}}
ENDPOINT = {"name": "E", "model": "e", "backend": "openai", "base_url": "http://h:1/v1"}


@pytest.mark.parametrize(
    "config, gpu",
    [
        (cfg(), False),
        (cfg(vllm=True), True),
        (cfg(launcher="accelerate", accel="config/accelerate/zero2.yaml"), True),
        (cfg(launcher="accelerate", accel="config/accelerate/zero3.yaml"), True),
        (cfg(launcher="accelerate", accel="config/accelerate/fsdp.yaml"), False),
        # the config file only matters when accelerate launches it
        (cfg(launcher="inprocess", accel="config/accelerate/zero2.yaml"), False),
        (cfg(vllm=True, launcher="accelerate", accel="config/accelerate/fsdp.yaml"), True),
    ],
)
def test_training_env_follows_the_config(config, gpu):
    assert needs_gpu_env(config, "train_router", base_dirs=[REPO]) is gpu
    assert conda_env(config, "train_router", base_dirs=[REPO]) == (GPU_ENV if gpu else CPU_ENV)
    # evaluation and the rest generate with transformers: vLLM rollouts are a training switch
    for rule in ("evaluate_router", "profile_pool", "warm_start", "aggregate", "fetch_model"):
        assert conda_env(config, rule, base_dirs=[REPO]) == CPU_ENV


def test_pool_served_by_the_pipeline_puts_pool_rules_in_the_gpu_env():
    served = cfg(pool=[{"name": "A", "model": "a", "backend": "local"}, SERVED])
    for rule in POOL_RULES | UNSEEN_RULES:
        assert conda_env(served, rule) == GPU_ENV, rule
    for rule in ("download_data", "fetch_model", "describe_pool", "aggregate", "pareto"):
        assert conda_env(served, rule) == CPU_ENV, rule
    # a vllm-served unseen model only concerns the rules that build the extended pool
    unseen = cfg(unseen=[SERVED])
    assert {r for r in POOL_RULES | UNSEEN_RULES if conda_env(unseen, r) == GPU_ENV} == UNSEEN_RULES
    for pool in ([SERVED_ELSEWHERE], [ENDPOINT]):
        assert not launches_vllm(pool)
        assert conda_env(cfg(pool=pool), "evaluate_single") == CPU_ENV


def test_shipped_configs_pick_their_envs(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # like `snakemake -d elsewhere`: found through base_dirs
    paper = load_config(REPO / "config" / "paper.yaml")  # accelerate + ZeRO-2
    assert conda_env(paper, "train_router", base_dirs=[REPO]) == GPU_ENV
    default = load_config(REPO / "config" / "config.yaml")
    assert conda_env(default, "train_router", base_dirs=[REPO]) == CPU_ENV


def test_deepspeed_detection_reads_the_file(tmp_path):
    ds = tmp_path / "ds.yaml"
    ds.write_text("distributed_type: DEEPSPEED\ndeepspeed_config: {zero_stage: 2}\n")
    ddp = tmp_path / "ddp.yaml"
    ddp.write_text("distributed_type: MULTI_GPU\n")
    assert uses_deepspeed(ds) and not uses_deepspeed(ddp) and not uses_deepspeed(None)
    assert uses_deepspeed("ds.yaml", base_dirs=[tmp_path])
    with pytest.raises(ValueError, match="launch.accelerate_config.*missing.yaml"):
        uses_deepspeed(tmp_path / "missing.yaml")


def test_fetched_model_keys_skip_endpoint_backed_entries():
    entries = [
        {"name": "A", "model": "m-local", "backend": "local"},
        {"name": "B", "model": "m-remote", "backend": "openai"},
        {"name": "C", "model": "m-default"},  # backend defaults to local
        {"name": "D", "model": "m-local", "backend": "local"},
        {**SERVED, "model": "m-served"},  # the pipeline serves the fetched folder
        {**SERVED, "model": "m-hub-served", "vllm": {"model": "org/m"}},  # vLLM pulls it itself
    ]
    assert fetched_model_keys(entries) == ["m-default", "m-local", "m-served"]
    assert fetched_model_keys([]) == []


def test_openai_unseen_model_plans_no_weight_download(tmp_path, tiny_mirror):
    """Dry run of the smoke DAG with an endpoint-backed unseen model: no fetch_model for it."""
    extra = tmp_path / "unseen.yaml"
    extra.write_text(
        yaml.safe_dump(
            {
                "models": {
                    "remote-7b": {
                        "source": {"kind": "hub", "repo_id": "org/remote-7b", "revision": "main"}
                    }
                },
                "pool_unseen": [
                    {
                        "name": "Remote-7B",
                        "model": "remote-7b",
                        "backend": "openai",
                        "base_url": "http://127.0.0.1:9/v1",
                        "price_in": 0.1,
                        "price_out": 0.2,
                        "description": "Served elsewhere.",
                    }
                ],
            }
        )
    )
    cmd = [
        str(SNAKEMAKE),
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(tmp_path / "wd"),
        "--configfile",
        str(REPO / "tests" / "data" / "smoke.yaml"),
        str(extra),
        "--config",
        f"data_mirror={tiny_mirror}",
        "-n",
        "results/pareto.pdf",
    ]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "rule profile_unseen" in out and "rule evaluate_router_unseen" in out
    assert "resources/models/remote-7b" not in out
    assert "resources/models/smollm2-135m" in out  # the local pool's weights are still fetched
