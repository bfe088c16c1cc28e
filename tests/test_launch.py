"""The train launcher: in process, or an `accelerate launch` command built from the job's GPUs."""

from __future__ import annotations

import json
import subprocess
import types
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from routerr1 import launch, precision
from routerr1.config import LaunchConfig, RunConfig, launch_config, validate_config
from routerr1.launch import (
    TrainJob,
    accelerate_command,
    num_processes,
    run_train_job,
    run_worker,
)
from routerr1.precision import Hardware
from routerr1.stages import train as train_stage
from routerr1.train import batch_geometry, fsdp_generation_copy, generation_model

REPO = Path(__file__).resolve().parents[1]
ZERO2 = REPO / "config" / "accelerate" / "zero2.yaml"


def job(tmp_path: Path) -> TrainJob:
    return TrainJob(
        alpha=0.7,
        train_in="results/data/train.parquet",
        descriptors_in="results/pool/descriptors.json",
        policy_dir="resources/models/policy",
        checkpoints=str(tmp_path / "alpha~0.7" / "checkpoints"),
        model_out=str(tmp_path / "alpha~0.7" / "model"),
    )


def minimal_config(**launch_section) -> dict:
    raw = {
        "models": {"m": {"source": {"kind": "hub", "repo_id": "org/m"}}},
        "pool": [{"name": "M", "model": "m", "price_in": 0.1, "price_out": 0.2}],
        "policy": {"model": "m"},
    }
    if launch_section:
        raw["launch"] = launch_section
    return validate_config(raw)


def test_schema_default_is_in_process():
    assert launch_config(minimal_config()) == LaunchConfig("inprocess", None, None)


def test_bad_launch_settings_name_the_key():
    with pytest.raises(ValueError, match="launch.launcher"):
        LaunchConfig(launcher="torchrun")
    with pytest.raises(ValueError, match="launch.accelerate_config"):
        LaunchConfig(launcher="accelerate")
    with pytest.raises(ValueError, match="launch.main_process_port"):
        LaunchConfig("accelerate", str(ZERO2), main_process_port=70000)
    with pytest.raises(ValueError, match="launch.launcher"):
        minimal_config(launcher="slurm")  # the schema refuses it before any job runs


def test_process_count_comes_from_the_gpu_resource():
    assert num_processes(4, visible_gpus=8) == 4
    assert num_processes(0, visible_gpus=2) == 2  # no resource: every GPU the job can see
    assert num_processes(None, visible_gpus=1) == 1
    with pytest.raises(ValueError, match="resources.gpu"):
        num_processes(0, visible_gpus=0)
    with pytest.raises(ValueError, match="resources.gpu"):
        num_processes(-1, visible_gpus=4)


def test_accelerate_command_is_what_accelerate_parses(tmp_path):
    from accelerate.commands.launch import launch_command_parser

    cfg = LaunchConfig("accelerate", str(ZERO2))
    cmd = accelerate_command(cfg, 4, tmp_path / "job.json", bf16=True, port=29617, python="py")
    assert cmd[:3] == ["py", "-m", "accelerate.commands.launch"]
    args = launch_command_parser().parse_args(cmd[3:])
    assert args.config_file == str(ZERO2)
    assert args.num_processes == 4 and args.num_machines == 1 and args.main_process_port == 29617
    assert args.mixed_precision == "bf16"
    assert args.module and args.training_script == "routerr1.launch"
    assert args.training_script_args == [str(tmp_path / "job.json")]
    no_bf16 = accelerate_command(cfg, 1, "j.json", bf16=False, port=1, extra_args=["--cpu"])
    assert launch_command_parser().parse_args(no_bf16[3:]).mixed_precision == "no"
    assert "--cpu" in no_bf16


def test_accelerate_command_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match="launch.accelerate_config"):
        accelerate_command(
            LaunchConfig("accelerate", str(tmp_path / "missing.yaml")), 2, "j", bf16=True, port=1
        )
    with pytest.raises(ValueError, match="resources.gpu"):
        accelerate_command(LaunchConfig("accelerate", str(ZERO2)), 0, "j", bf16=True, port=1)
    with pytest.raises(ValueError, match="launch.launcher"):
        accelerate_command(LaunchConfig(), 2, "j", bf16=True, port=1)


@pytest.mark.parametrize("name", ["zero2.yaml", "zero3.yaml", "fsdp.yaml"])
def test_shipped_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import load_config_from_file

    loaded = load_config_from_file(str(REPO / "config" / "accelerate" / name))
    assert loaded.num_machines == 1 and loaded.mixed_precision == "bf16"
    if name.startswith("zero"):
        assert loaded.deepspeed_config["zero_stage"] == int(name[4])
    else:
        assert loaded.fsdp_config["fsdp_version"] == 2


def test_in_process_calls_the_stage_directly(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(train_stage, "train", lambda run, **kw: calls.append(kw) or {"ok": 1})
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("no subprocess"))
    assert run_train_job(minimal_config(), job(tmp_path), gpus=1) == {"ok": 1}
    assert calls == [{**job(tmp_path).__dict__}]


def test_accelerate_launch_writes_the_job_and_runs_it(tmp_path, monkeypatch):
    cfg = minimal_config(launcher="accelerate", accelerate_config=str(ZERO2))
    the_job = job(tmp_path)
    seen = {}

    def fake_run(cmd, **kwargs):
        seen["cmd"] = cmd
        out = Path(the_job.model_out)
        out.mkdir(parents=True)
        (out / "routerr1_train.json").write_text(json.dumps({"global_step": 3}))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(launch, "_visible_gpus", lambda: 0)
    # train.precision defaults to auto, resolved on the node that launches: bf16 on this GPU
    gpu_node = Hardware("Xeon", "AVX2", frozenset(), cuda_name="NVIDIA H100", cuda_bf16=True)
    monkeypatch.setattr(precision, "probe", lambda: gpu_node)
    assert run_train_job(cfg, the_job, gpus=2) == {"global_step": 3}
    cmd = seen["cmd"]
    assert cmd[cmd.index("--num_processes") + 1] == "2"
    assert cmd[cmd.index("--config_file") + 1] == str(ZERO2)
    assert cmd[cmd.index("--mixed_precision") + 1] == "bf16"
    job_file = Path(cmd[-1])
    assert job_file == Path(the_job.checkpoints) / launch.JOB_FILE  # beside the checkpoints
    payload = json.loads(job_file.read_text())
    assert TrainJob(**payload["job"]) == the_job and payload["config"]["launch"] == cfg["launch"]


def test_failed_launch_raises(tmp_path, monkeypatch):
    cfg = minimal_config(launcher="accelerate", accelerate_config=str(ZERO2))
    monkeypatch.setattr(subprocess, "run", lambda cmd, **k: subprocess.CompletedProcess(cmd, 3))
    with pytest.raises(RuntimeError, match="status 3"):
        run_train_job(cfg, job(tmp_path), gpus=1)


@pytest.mark.parametrize(("rank", "tracked"), [("0", True), ("1", False), (None, True)])
def test_worker_tracks_on_rank_zero_only(tmp_path, monkeypatch, rank, tracked):
    cfg = minimal_config()
    job_file = launch.write_job(cfg, job(tmp_path))
    calls = []
    monkeypatch.setattr(train_stage, "train", lambda r, **kw: calls.append((r, kw)) or {})
    if rank is None:
        monkeypatch.delenv("RANK", raising=False)
    else:
        monkeypatch.setenv("RANK", rank)
    run_worker(job_file)
    ((got_cfg, kw),) = calls
    assert isinstance(got_cfg, RunConfig) and kw.pop("track") is tracked
    assert got_cfg.raw == json.loads(json.dumps(cfg))
    assert kw == job(tmp_path).__dict__


def test_batch_geometry_splits_one_step_over_processes():
    assert batch_geometry(2, 4, 8, 1) == (8, 8, 1)  # the in-process behaviour, unchanged
    assert batch_geometry(64, 5, 4, 4) == (320, 4, 20)  # paper: 4 GPUs, 80 sequences each
    assert batch_geometry(64, 5, 4, 1) == (320, 4, 80)
    with pytest.raises(ValueError, match="train.micro_batch_size"):
        batch_geometry(64, 5, 6, 4)
    with pytest.raises(ValueError, match="train.prompts_per_step"):
        batch_geometry(3, 3, 1, 4)


def tiny_trainer():
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    model = AutoModelForCausalLM.from_config(cfg)
    acc = types.SimpleNamespace(
        state=types.SimpleNamespace(deepspeed_plugin=None, fsdp_plugin=None),
        unwrap_model=lambda m: m,
        device=torch.device("cpu"),
    )
    args = types.SimpleNamespace(bf16=False)
    return types.SimpleNamespace(accelerator=acc, model=model, model_wrapped=model, args=args)


def test_rollouts_generate_with_the_model_itself_when_weights_are_whole():
    trainer = tiny_trainer()
    with generation_model(trainer) as model:
        assert model is trainer.model


def test_fsdp_copy_follows_the_trained_weights():
    trainer = tiny_trainer()
    copy = fsdp_generation_copy(trainer)
    assert copy is not trainer.model
    with torch.no_grad():
        trainer.model.model.embed_tokens.weight.add_(1.0)  # an optimizer step
    again = fsdp_generation_copy(trainer)
    assert again is copy  # built once, refreshed in place
    copied = copy.state_dict()
    for name, weight in trainer.model.state_dict().items():
        assert torch.equal(weight, copied[name]), name


DDP_CPU = """\
# two processes on CPU: torch.distributed.run with the gloo backend (no GPU here)
compute_environment: LOCAL_MACHINE
distributed_type: MULTI_GPU
mixed_precision: 'no'
machine_rank: 0
num_machines: 1
num_processes: 2
rdzv_backend: static
same_network: true
use_cpu: false
"""


@pytest.mark.slow
def test_two_processes_through_accelerate_launch_and_resume(tmp_path, monkeypatch, smollm2_dir):
    """The real launcher on CPU: 2 processes, one MLflow run, one saved model, then a resume."""
    import mlflow

    from routerr1.config import load_config
    from routerr1.data import QARecord, records_to_frame
    from routerr1.io import write_json_atomic, write_parquet_atomic

    monkeypatch.chdir(tmp_path)  # the stage writes results/ from here
    (tmp_path / "resources" / "models").mkdir(parents=True)
    (tmp_path / "resources" / "models" / "smollm2-135m").symlink_to(smollm2_dir)
    (tmp_path / "ddp_cpu.yaml").write_text(DDP_CPU)
    records = [
        QARecord(str(i), q, (a,), "nq", "train")
        for i, (q, a) in enumerate(
            [("capital of france?", "Paris"), ("who wrote hamlet?", "Shakespeare")]
        )
    ]
    write_parquet_atomic(records_to_frame(records), tmp_path / "train.parquet")
    descriptors = [
        {
            "name": n,
            "description": "",
            "price_in": p,
            "price_out": p,
            "latency_p50_s": 0.1,
            "em": 10.0,
            "f1": 12.0,
        }
        for n, p in (("SmolLM2-Cheap", 0.02), ("SmolLM2-Dear", 0.2))
    ]
    write_json_atomic(descriptors, tmp_path / "descriptors.json")
    cfg = load_config(REPO / "tests" / "data" / "smoke.yaml")
    cfg["launch"] = {
        "launcher": "accelerate",
        "accelerate_config": "ddp_cpu.yaml",
        "main_process_port": None,
    }
    # one prompt per process and step: 2 prompts x 2 samples, micro batch 2 on each process
    cfg["train"].update(
        max_steps=1,
        prompts_per_step=2,
        num_generations=2,
        micro_batch_size=2,
        keep_checkpoints=True,
    )
    the_job = TrainJob(
        0.5, "train.parquet", "descriptors.json", "resources/models/smollm2-135m", "ckpt", "model"
    )
    the_job = replace(the_job, models=("resources/models/smollm2-135m",))
    env_keep = {"TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    for k, v in env_keep.items():
        monkeypatch.setenv(k, v)

    summary = run_train_job(cfg, the_job, gpus=2)
    assert summary["global_step"] == 1
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert (tmp_path / "ckpt" / "checkpoint-1").is_dir()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True)
    assert list(runs["tags.routerr1.key"]) == ["train/alpha~0.5"]  # rank 0 only
    assert set(runs["status"]) == {"FINISHED"}

    # a longer run picks up from checkpoint-1 instead of starting over
    cfg["train"]["max_steps"] = 2
    summary = run_train_job(cfg, the_job, gpus=2)
    assert summary["global_step"] == 2
    assert len(summary["rollouts"]) == 1  # this run generated for step 2 only
    runs = mlflow.search_runs(search_all_experiments=True)
    assert list(runs["tags.routerr1.key"]) == ["train/alpha~0.5"] * 2
