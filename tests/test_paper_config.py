"""config/paper.yaml (Router-R1 at paper scale) and profiles/slurm: both resolve in dry runs.

The hub is not reachable here, so nothing is executed: `snakemake -n` must plan the whole DAG
without fetching a model or a dataset.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from routerr1.config import launch_config, load_config, pool_entries, train_config

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "config" / "paper.yaml"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")

# Router-R1, camera-ready: the six open-weight pool models and their output $ per 1M tokens
PAPER_POOL = {
    "Qwen/Qwen2.5-7B-Instruct": 0.30,
    "meta-llama/Llama-3.1-8B-Instruct": 0.18,
    "meta-llama/Llama-3.1-70B-Instruct": 0.88,
    "mistralai/Mistral-7B-Instruct-v0.3": 0.20,
    "mistralai/Mixtral-8x22B-Instruct-v0.1": 1.20,
    "google/gemma-2-27b-it": 0.80,
}
BENCHMARKS = ["nq", "triviaqa", "popqa", "hotpotqa", "2wikimultihopqa", "musique", "bamboogle"]


@pytest.fixture(scope="module")
def paper() -> dict:
    return load_config(PAPER)


def test_paper_setting(paper):
    models = paper["models"]
    assert models[paper["policy"]["model"]]["source"] == {
        "kind": "hub",
        "repo_id": "Qwen/Qwen2.5-3B-Instruct",
        "revision": "main",
    }
    # the paper's other policy is one config edit away
    repos = {m["source"]["repo_id"] for m in models.values()}
    assert "meta-llama/Llama-3.2-3B-Instruct" in repos

    pool = pool_entries(paper)
    served = {models[e.model]["source"]["repo_id"]: e for e in pool}
    assert {repo: e.price_out for repo, e in served.items()} == PAPER_POOL
    assert all(e.price_in > 0 for e in pool)
    for e in pool:  # each pool model behind an OpenAI-compatible endpoint
        assert e.backend == "openai" and e.base_url.startswith("http")
        assert e.served_model == models[e.model]["source"]["repo_id"]

    data = paper["data"]
    assert data["train_benchmarks"] == ["nq", "hotpotqa"] and data["n_train"] == 2 * 7000
    assert data["eval_benchmarks"] == BENCHMARKS and data["n_eval"] == 500
    assert paper["warm_start"]["enabled"] is False

    t = train_config(paper)
    assert t.alphas == (0.0, 0.6, 0.7, 0.8, 0.9)
    assert (t.max_steps, t.prompts_per_step, t.learning_rate) == (225, 64, 1e-6)
    assert t.precision == "bf16"
    assert paper["rollout"]["temperature"] == 1.0
    launch = launch_config(paper)
    assert launch.launcher == "accelerate"
    assert (REPO / launch.accelerate_config).is_file()


def run_snakemake(workdir: Path, *args: str, env: dict | None = None):
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)


def job_counts(out: str) -> dict[str, int]:
    table = out.split("Job stats:")[1].split("Reasons:")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.M)}


def test_paper_dry_run_resolves_without_the_hub(tmp_path):
    proc = run_snakemake(tmp_path, "--configfile", str(PAPER), "-n")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    counts = job_counts(out)
    assert counts["train_router"] == 5 and counts["evaluate_router"] == 5
    assert counts["evaluate_single"] == 6
    # only the policy is fetched: the pool is served, its weights are not downloaded here
    assert counts["fetch_model"] == 1
    assert "resources/models/qwen2.5-3b-instruct" in out
    assert "This was a dry-run" in out
    assert not (tmp_path / "results").exists() and not (tmp_path / "resources").exists()


def test_slurm_profile_dry_run_without_slurm(tmp_path):
    """The README's SLURM command plans the paper DAG on a machine without SLURM."""
    pytest.importorskip("snakemake_executor_plugin_slurm")
    # a PATH with the venv and `which` (the plugin probes for sacct with it), but no SLURM
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "which").symlink_to(shutil.which("which"))
    path = os.pathsep.join([str(SNAKEMAKE.parent), str(tools)])
    assert shutil.which("sbatch", path=path) is None
    env = {**os.environ, "PATH": path}
    proc = run_snakemake(
        tmp_path,
        "--profile",
        str(REPO / "profiles" / "slurm"),
        "--configfile",
        str(PAPER),
        "-n",
        "results/pareto.pdf",
        env=env,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Using profile" in out and "profiles/slurm" in out
    resources = dict(re.findall(r"^rule (\w+):.*?resources: ([^\n]+)", out, flags=re.M | re.S))
    assert "slurm_partition=gpu" in resources["train_router"]
    assert "gpu=4" in resources["train_router"] and "cpus_per_gpu=8" in resources["train_router"]
    assert "gpu=1" in resources["evaluate_router"]
    assert "slurm_partition=cpu" in resources["profile_pool"]  # the pool is behind endpoints
    assert "gpu=" not in resources["evaluate_single"]


def test_slurm_profile_covers_every_submitted_rule():
    """Each rule that is not a localrule has an entry; local rules have none (never sbatched)."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    rules_text = "\n".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    rules = set(re.findall(r"^rule (\w+)", rules_text, flags=re.M))
    rules |= set(re.findall(r"^use rule \w+ as (\w+)", rules_text, flags=re.M))
    local_blocks = re.findall(
        r"^localrules:\n((?:\s+\w+,?\n)+)", (REPO / "Snakefile").read_text() + rules_text, re.M
    )
    local = {name for block in local_blocks for name in re.findall(r"\w+", block)}
    assert {"download_data", "fetch_model", "pareto"} <= local
    assert set(profile["set-resources"]) == rules - local
    assert "slurm_account" not in profile["default-resources"]
    for res in profile["set-resources"].values():
        assert "cpus_per_task" not in res  # the plugin would ignore cpus_per_gpu
