"""Integration: the smoke DAG submitted through profiles/slurm to a real SLURM cluster.

Runs where `sbatch` is on the PATH and a controller answers with partitions `cpu` and `gpu`, as
on the loopback cluster of ../shared/tools/slurm-up.sh (which .ci/run brings up). The profile is
used as shipped except for what a node without GPUs cannot grant: GPU requests go to 0 (a
`--gpus` request fails at submit time there) and memory fits the node.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
SLURM_PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
TEST_MEM_MB = 3000  # per job; the loopback node has 2 CPUs and about 24 GB


def _slurm_ready() -> str | None:
    """None when a usable cluster answers, else why the test must skip."""
    if shutil.which("sbatch") is None:
        return "sbatch is not on the PATH (no SLURM here; .ci/run starts a local cluster)"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed (pip install -e .[slurm])"
    try:
        proc = subprocess.run(
            ["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo failed: {exc}"
    if proc.returncode != 0:
        return f"no SLURM controller answers: {proc.stderr.strip()[:200]}"
    partitions = set(proc.stdout.split())
    if not {"cpu", "gpu"} <= partitions:
        return f"needs partitions cpu and gpu (the slurm-up.sh cluster); found {sorted(partitions)}"
    return None


def cpu_only_profile(src: Path, dest: Path, mem_mb: int = TEST_MEM_MB) -> Path:
    """Copy the SLURM profile with GPU requests set to 0 and memory capped at ``mem_mb``."""
    prof = yaml.safe_load(src.read_text())
    for res in [prof["default-resources"], *prof["set-resources"].values()]:
        if "gpu" in res:
            res["gpu"] = 0
        res.pop("gpu_model", None)  # the plugin would still send --gpus=<model>:<n>
        res.pop("cpus_per_gpu", None)
        res["mem_mb"] = min(int(res.get("mem_mb", mem_mb)), mem_mb)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(prof, sort_keys=False))
    return dest


def test_cpu_only_profile_keeps_everything_but_gpus_and_memory(tmp_path):
    shipped = yaml.safe_load(SLURM_PROFILE.read_text())
    derived_dir = cpu_only_profile(SLURM_PROFILE, tmp_path)
    derived = yaml.safe_load((derived_dir / "config.yaml").read_text())
    assert derived["executor"] == "slurm"
    assert set(derived["set-resources"]) == set(shipped["set-resources"])
    for rule, res in derived["set-resources"].items():
        assert res.get("gpu", 0) == 0 and "gpu_model" not in res, rule
        assert res["slurm_partition"] == shipped["set-resources"][rule]["slurm_partition"]
        assert res["runtime"] == shipped["set-resources"][rule]["runtime"]
        assert res["mem_mb"] <= TEST_MEM_MB
    assert shipped["set-resources"]["train_router"]["gpu"] >= 1


def _sacct(run_id: str, since: str) -> dict[str, tuple[str, str]]:
    """SLURM job id -> (state, partition) for the jobs of one Snakemake run."""
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "--name", run_id, "-S", since, "-o", "JobID,State,Partition"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    return {r[0]: (r[1], r[2]) for r in rows}


@pytest.mark.slow
def test_smoke_dag_through_slurm(tmp_path, tiny_mirror):
    reason = _slurm_ready()
    if reason:
        pytest.skip(reason)
    profile = cpu_only_profile(SLURM_PROFILE, tmp_path / "profile")
    workdir = tmp_path / "work"
    since = time.strftime("%Y-%m-%dT%H:%M:%S")
    cmd = [
        str(SNAKEMAKE),
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--profile",
        str(profile),
        "--configfile",
        str(REPO / "tests" / "data" / "smoke.yaml"),
        "--config",
        f"data_mirror={tiny_mirror}",
        "threads=1",  # two 1-CPU jobs at a time on the 2-CPU node
        "--slurm-init-seconds-before-status-checks",
        "6",
        "--retries",
        "0",
        "results/pareto.pdf",
    ]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    elapsed = time.monotonic() - started
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"snakemake failed ({proc.returncode}):\n{log[-6000:]}"
    assert (workdir / "results" / "pareto.pdf").read_bytes().startswith(b"%PDF")

    run_id = re.search(r"SLURM run ID: (\S+)", log).group(1)
    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log))
    # every non-local job went through sbatch; local rules (downloads, plots) did not
    remote_jobs = re.findall(r"^rule (\w+):", log, flags=re.M)
    local_jobs = re.findall(r"^localrule (\w+):", log, flags=re.M)
    assert len(submitted) == len(remote_jobs) > 0
    assert {"train_router", "evaluate_router", "profile_pool", "warm_start"} <= set(remote_jobs)
    assert {"download_data", "fetch_model", "pareto"} <= set(local_jobs)
    assert not {"download_data", "fetch_model", "aggregate", "pareto"} & set(remote_jobs)

    accounting = _sacct(run_id, since)
    assert set(submitted.values()) == set(accounting), (submitted, accounting)
    assert {state for state, _ in accounting.values()} == {"COMPLETED"}, accounting
    # the profile's partitions were used (GPU rules to gpu, the rest to cpu)
    assert {part for _, part in accounting.values()} == {"cpu", "gpu"}
    print(f"\nSLURM smoke DAG: {len(submitted)} sbatch jobs, {elapsed:.0f} s")
