"""Glue between Snakemake and the library: logging, threads, slugs, conda envs, model keys."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

# conda envs, relative to workflow/rules/ (where every rule is defined)
CPU_ENV = "../envs/routerr1.yaml"
GPU_ENV = "../envs/routerr1-gpu.yaml"  # routerr1[gpu]: vllm + deepspeed, vllm's torch/transformers
# rules that build the pool: an entry with `serve: vllm` starts `vllm serve` from the job, so vllm
# must be on the job's PATH (unless the entry's vllm.command names another install)
POOL_RULES = frozenset(
    {
        "profile_pool",
        "pool_answers",
        "warm_start",
        "train_router",
        "train_router_seed",
        "evaluate_router",
        "evaluate_router_seed",
        "evaluate_prompt_router",
        "evaluate_single",
    }
)
# pool + pool_unseen
UNSEEN_RULES = frozenset(
    {"profile_unseen", "evaluate_router_unseen", "evaluate_router_unseen_seed"}
)
TRAIN_RULES = frozenset({"train_router", "train_router_seed"})  # one per training seed


def slug(name: str) -> str:
    """File-safe form of a pool model name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def fetched_model_keys(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    """Model keys whose weights the pipeline must fetch for these pool entries.

    A ``local`` entry runs in process; a ``serve: vllm`` entry serves the fetched folder unless
    its ``vllm.model`` names what to serve. Any other ``openai`` entry calls an endpoint someone
    else runs, so its weights are never downloaded.
    """
    return sorted(
        {
            e["model"]
            for e in entries
            if e.get("backend", "local") == "local"
            or (e.get("serve") == "vllm" and not (e.get("vllm") or {}).get("model"))
        }
    )


def launches_vllm(entries: Iterable[Mapping[str, Any]]) -> bool:
    """Whether building this pool runs ``vllm serve`` from the job's own environment."""
    return any(
        e.get("serve") == "vllm" and not (e.get("vllm") or {}).get("command") for e in entries
    )


def uses_deepspeed(
    accelerate_config: str | Path | None, base_dirs: Sequence[str | Path] = ()
) -> bool:
    """Whether an ``accelerate launch`` config file runs DeepSpeed (``distributed_type``).

    A relative path is looked up in the working directory, then in ``base_dirs`` (the Snakefile's
    folder: ``snakemake -d elsewhere`` plans from there while the config files stay in the repo).
    """
    if not accelerate_config:
        return False
    path = Path(accelerate_config)
    candidates = [path] + [Path(d) / path for d in base_dirs if not path.is_absolute()]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise ValueError(f"launch.accelerate_config: file {str(path)!r} does not exist")
    data = yaml.safe_load(found.read_text()) or {}
    return str(data.get("distributed_type", "")).upper() == "DEEPSPEED"


def trains_on_gpu_stack(config: Mapping[str, Any], base_dirs: Sequence[str | Path] = ()) -> bool:
    """True when training imports a GPU-only package: vLLM rollouts or a DeepSpeed launch."""
    if config.get("vllm", {}).get("enabled", False):
        return True
    launch = config.get("launch", {})
    return launch.get("launcher") == "accelerate" and uses_deepspeed(
        launch.get("accelerate_config"), base_dirs
    )


def needs_gpu_env(
    config: Mapping[str, Any], rule: str, base_dirs: Sequence[str | Path] = ()
) -> bool:
    """Whether ``rule``'s job imports vllm or deepspeed, or starts ``vllm serve`` (this config)."""
    if rule in TRAIN_RULES and trains_on_gpu_stack(config, base_dirs):
        return True
    if rule in UNSEEN_RULES:
        return launches_vllm([*config.get("pool", []), *config.get("pool_unseen", [])])
    return rule in POOL_RULES and launches_vllm(config.get("pool", []))


def conda_env(config: Mapping[str, Any], rule: str, base_dirs: Sequence[str | Path] = ()) -> str:
    """The conda env file for a rule's ``conda:`` directive under ``--sdm conda``.

    The GPU env (vllm pins its own torch and transformers) only for the rules that need it in this
    config; everything else, and every rule of a CPU config, uses the default env.
    """
    return GPU_ENV if needs_gpu_env(config, rule, base_dirs) else CPU_ENV


@contextmanager
def snakemake_job(smk):
    """Send stdout/stderr (progress bars included) to the rule's log and set torch threads."""
    log_path = Path(smk.log[0]) if smk.log else None
    stream = None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        stream = open(log_path, "a", buffering=1)  # noqa: SIM115
        sys.stdout = sys.stderr = stream
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
        force=True,
    )
    try:
        import torch

        torch.set_num_threads(max(1, int(getattr(smk, "threads", 1) or 1)))
        # eager CPU ops never use the inter-op pool; left at its default (one thread per
        # core) it only adds threads that compete with the intra-op ones on a 2-core machine
        torch.set_num_interop_threads(1)
    except ImportError:
        pass
    except RuntimeError:  # the inter-op pool already started in this process
        pass
    try:
        from routerr1.precision import probe

        # every job log names the machine its `auto` precisions were resolved on
        logging.getLogger("routerr1").info("hardware: %s", probe().describe())
    except ImportError:  # no torch in this env
        pass
    try:
        yield
    except Exception:
        logging.getLogger("routerr1").exception("job failed")
        raise
    finally:
        if stream is not None:
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
            stream.close()
