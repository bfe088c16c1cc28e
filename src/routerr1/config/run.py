"""The run's config typed once (:class:`RunConfig`), the section builders, and the small
helpers over the validated dict (seeds, alpha labels, source fingerprints)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from routerr1.config.schema import ConfigError
from routerr1.config.sections import (
    DataConfig,
    EvalConfig,
    LaunchConfig,
    PoolEntry,
    RolloutConfig,
    SamplingConfig,
    TrainConfig,
    WarmStartConfig,
)
from routerr1.config.vllm import VllmConfig


@dataclass(frozen=True)
class RunConfig:
    """Every section of a validated config, typed once (``RunConfig.from_dict``).

    ``raw`` is the validated dict itself: MLflow logs and fingerprints it as it is (a resumed
    run must find the same fingerprint), and Snakemake rules read it.
    """

    raw: Mapping[str, Any] = field(hash=False, compare=False, repr=False)
    seed: int
    pool: tuple[PoolEntry, ...]
    pool_unseen: tuple[PoolEntry, ...]
    data: DataConfig
    rollout: RolloutConfig
    train: TrainConfig
    eval: EvalConfig
    warm_start: WarmStartConfig
    launch: LaunchConfig
    vllm: VllmConfig

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> RunConfig:
        """The typed view of a dict ``validate_config`` returned (it has every key)."""
        return cls(
            raw=cfg,
            seed=int(cfg["seed"]),
            pool=tuple(pool_entries(cfg)),
            pool_unseen=tuple(pool_entries({**cfg, "pool": cfg["pool_unseen"]})),
            data=data_config(cfg),
            rollout=rollout_config(cfg),
            train=train_config(cfg),
            eval=eval_config(cfg),
            warm_start=warm_start_config(cfg),
            launch=launch_config(cfg),
            vllm=vllm_config(cfg),
        )

    def extended(self) -> RunConfig:
        """This run with ``pool`` = training pool + ``pool_unseen`` (see extended_pool_config)."""
        return RunConfig.from_dict(extended_pool_config(self.raw))

    @property
    def pool_cache(self) -> bool:
        return bool(self.raw["pool_cache"])

    @property
    def linear_kernel(self) -> str:
        return self.raw["linear_kernel"]

    @property
    def policy_model(self) -> str:
        return self.raw["policy"]["model"]

    @property
    def policy_dtype(self) -> str:
        return self.raw["policy"]["dtype"]

    @property
    def train_seeds(self) -> list[int]:
        return train_seeds(self.raw)

    def seed_level(self, seed: int | None) -> str:
        return seed_level(self.raw, seed)


def extended_pool_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The config with ``pool`` = training pool + ``pool_unseen``.

    Names, aliases and model keys of both lists were checked together by config validation.
    """
    unseen = list(cfg.get("pool_unseen") or [])
    if not unseen:
        raise ConfigError("pool_unseen: empty; list the models the routers never saw")
    return {**cfg, "pool": [*cfg["pool"], *unseen]}


def warm_start_config(cfg: Mapping[str, Any]) -> WarmStartConfig:
    return WarmStartConfig(**cfg["warm_start"])


def launch_config(cfg: Mapping[str, Any]) -> LaunchConfig:
    return LaunchConfig(**cfg["launch"])


def vllm_config(cfg: Mapping[str, Any]) -> VllmConfig:
    return VllmConfig(**cfg["vllm"])


def data_config(cfg: Mapping[str, Any]) -> DataConfig:
    d = cfg["data"]
    profile = d["profile_benchmarks"]
    sampling = SamplingConfig(
        train_benchmarks=tuple(d["train_benchmarks"]),
        eval_benchmarks=tuple(d["eval_benchmarks"]),
        n_train=d["n_train"],
        n_eval=d["n_eval"],
        n_profile=d["n_profile"],
        seed=cfg["seed"],
        profile_benchmarks=tuple(profile) if profile else None,
    )
    mirror = cfg["data_mirror"]
    return DataConfig(
        sampling=sampling,
        mirror=Path(mirror) if mirror else None,
        hub_repo=d["hub_repo"],
        hub_revision=d["hub_revision"],
        question_mark=bool(d["question_mark"]),
    )


def pool_entries(cfg: Mapping[str, Any]) -> list[PoolEntry]:
    models = cfg["models"]
    return [
        PoolEntry(
            name=p["name"],
            model=p["model"],
            price_in=float(p["price_in"]),
            price_out=float(p["price_out"]),
            description=p["description"],
            aliases=tuple(p["aliases"]),
            dtype=p["dtype"],
            max_new_tokens=int(p["max_new_tokens"]),
            prompt_style=models[p["model"]]["prompt_style"],
            chat_examples=bool(p["chat_examples"]),
            prompt=p["prompt"],
            extract=p["extract"],
            backend=p["backend"],
            base_url=p.get("base_url"),  # optional, no default
            api_key_env=p.get("api_key_env"),
            served_model=p.get("served_model"),
            max_concurrency=int(p["max_concurrency"]),
            timeout_s=float(p["timeout_s"]),
            max_retries=int(p["max_retries"]),
            temperature=float(p["temperature"]),
            revision=source_fingerprint(models[p["model"]]["source"]),
            serve=p["serve"],
            vllm=dict(p.get("vllm") or {}),
        )
        for p in cfg["pool"]
    ]


def source_fingerprint(source: Mapping[str, Any]) -> str:
    """Short sha256 of a model source (repo + revision, wheel pin + checksum, or path)."""
    blob = json.dumps(dict(source), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def rollout_config(cfg: Mapping[str, Any]) -> RolloutConfig:
    return RolloutConfig(**cfg["rollout"])


def train_config(cfg: Mapping[str, Any]) -> TrainConfig:
    t = dict(cfg["train"])
    t["alphas"] = tuple(float(a) for a in t["alphas"])
    if t["seeds"] is not None:
        t["seeds"] = tuple(int(s) for s in t["seeds"])
    return TrainConfig(**t)


def train_seeds(cfg: Mapping[str, Any]) -> list[int]:
    """The training seeds: ``train.seeds``, or the top-level seed when that is null."""
    seeds = cfg["train"]["seeds"]
    return [int(s) for s in seeds] if seeds is not None else [int(cfg["seed"])]


def seed_level(cfg: Mapping[str, Any], seed: int | None) -> str:
    """Path and run-key suffix of a training seed: "" for the top-level seed (the one-seed
    layout every earlier run wrote), "/seed~S" for any other."""
    if seed is None or int(seed) == int(cfg["seed"]):
        return ""
    return f"/seed~{int(seed)}"


def eval_config(cfg: Mapping[str, Any]) -> EvalConfig:
    e = dict(cfg["eval"])
    e["baselines"] = tuple(e["baselines"])
    return EvalConfig(**e)


def alpha_label(alpha: float) -> str:
    """Stable wildcard text for an alpha value (0.5 -> '0.5', 0 -> '0.0')."""
    return repr(float(alpha))
