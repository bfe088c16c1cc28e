"""How train_router runs its training: inside the Snakemake job, or through `accelerate launch`.

The train rule stays thin: its script hands the job's paths and its ``gpu`` resource to
:func:`run_train_job`. With ``launch.launcher: inprocess`` (the default) that calls
:func:`routerr1.stages.train.train` in the job's own process, on one device. With ``accelerate`` it
writes the job to ``launch_job.json`` in the checkpoint folder and runs

    python -m accelerate.commands.launch --config_file <launch.accelerate_config>
        --num_processes <gpu> ... --module routerr1.launch <launch_job.json>

Every process then runs :func:`run_worker`: rank 0 trains with MLflow tracking, the others train
without it. Either way training resumes from the last checkpoint in the checkpoint folder, so a
requeued or retried job continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from routerr1.config import LaunchConfig, RunConfig
from routerr1.io import write_json_atomic
from routerr1.pool.vllm_launcher import free_port
from routerr1.precision import resolve_precision

log = logging.getLogger(__name__)

JOB_FILE = "launch_job.json"


@dataclass(frozen=True)
class TrainJob:
    """One train_router job: the alpha, the seed and the paths the rule hands over."""

    alpha: float
    train_in: str
    descriptors_in: str
    policy_dir: str
    checkpoints: str
    model_out: str
    seed: int | None = None  # None: the top-level seed (train.seeds)
    models: tuple[str, ...] = ()  # the fetched model folders the pool loads (input.models)
    answers_in: str | None = None  # pool answers, for train.prompt_filter: routes_differ

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", tuple(str(m) for m in self.models))  # JSON: a list


def num_processes(gpus: int | None, visible_gpus: int) -> int:
    """Processes for `accelerate launch`: the job's ``gpu`` resource, else every visible GPU."""
    if gpus is not None and (isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0):
        raise ValueError(f"resources.gpu: {gpus!r} is not a GPU count")
    if gpus:
        return gpus
    if visible_gpus > 0:
        return visible_gpus
    raise ValueError(
        "resources.gpu: launch.launcher 'accelerate' needs GPUs, but the job asks for none and "
        "torch sees none; give train_router a gpu resource (profiles/slurm) or use 'inprocess'"
    )


def accelerate_command(
    launch: LaunchConfig,
    processes: int,
    job_file: str | Path,
    *,
    bf16: bool,
    port: int,
    python: str = sys.executable,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The `accelerate launch` command line for one training job.

    ``--num_processes``, ``--mixed_precision`` (``train.precision``, resolved on this node) and
    the rendezvous port are given on the command line, where they win over the accelerate
    config file.
    """
    if launch.launcher != "accelerate":
        raise ValueError(f"launch.launcher: {launch.launcher!r} does not use accelerate")
    config_file = Path(str(launch.accelerate_config))
    if not config_file.is_file():
        raise ValueError(f"launch.accelerate_config: file {str(config_file)!r} does not exist")
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"resources.gpu: {processes!r} processes; need at least 1")
    return [
        python,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config_file),
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--machine_rank",
        "0",
        "--main_process_port",
        str(port),
        "--mixed_precision",
        "bf16" if bf16 else "no",
        *extra_args,
        "--module",
        "routerr1.launch",
        str(job_file),
    ]


def write_job(cfg: Mapping[str, Any], job: TrainJob) -> Path:
    """The job file the launched processes read: the validated config and the job's paths."""
    path = Path(job.checkpoints) / JOB_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic({"config": dict(cfg), "job": asdict(job)}, path)
    return path


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _stream(obj: IO[str] | None) -> IO[str] | None:
    """A stream the child can inherit (the rule's log), or None to inherit ours."""
    try:
        obj.fileno()  # type: ignore[union-attr]
    except (AttributeError, OSError, ValueError):
        return None
    return obj


def run_train_job(
    cfg: Mapping[str, Any],
    job: TrainJob,
    gpus: int | None = None,
    extra_args: Sequence[str] = (),
) -> dict[str, Any]:
    """Train one router as ``cfg['launch']`` says; returns the training summary."""
    from routerr1.stages import train as train_stage

    run = RunConfig.from_dict(cfg)
    launch = run.launch
    if launch.launcher == "inprocess":
        if gpus and gpus > 1:
            log.warning(
                "the job holds %d GPUs but launch.launcher 'inprocess' uses one; "
                "set launch.launcher: accelerate to use them all",
                gpus,
            )
        return train_stage.train(run, **asdict(job))
    job_file = write_job(cfg, job)
    cmd = accelerate_command(
        launch,
        num_processes(gpus, _visible_gpus()),
        job_file,
        bf16=resolve_precision(run.train.precision).value == "bf16",
        port=launch.main_process_port or free_port(),
        extra_args=extra_args,
    )
    log.info("launching: %s", shlex.join(cmd))
    sys.stdout.flush()
    sys.stderr.flush()
    proc = subprocess.run(cmd, stdout=_stream(sys.stdout), stderr=_stream(sys.stderr), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"accelerate launch exited with status {proc.returncode}: {cmd}")
    return json.loads((Path(job.model_out) / "routerr1_train.json").read_text())


def is_main_process() -> bool:
    """Rank 0 of a launched group (torch.distributed's RANK), or a process on its own."""
    return int(os.environ.get("RANK", "0")) == 0


def run_worker(job_file: str | Path) -> dict[str, Any]:
    """What each launched process runs: the same training, tracked in MLflow on rank 0 only."""
    from routerr1.stages import train as train_stage

    payload = json.loads(Path(job_file).read_text())
    job = TrainJob(**payload["job"])
    run = RunConfig.from_dict(payload["config"])
    return train_stage.train(run, **asdict(job), track=is_main_process())


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m routerr1.launch <launch_job.json>", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s rank{os.environ.get('RANK', '0')} %(name)s %(levelname)s %(message)s",
    )
    run_worker(args[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
