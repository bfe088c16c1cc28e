"""The typed config sections (one frozen dataclass each, defaults from the schema).

A validated dict has every key, so the builders in :mod:`routerr1.config.run` pass them through;
the dataclass defaults serve code and tests that build a section by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from routerr1.config.schema import ConfigError, check_choice, schema_default, schema_section

_POOL_ENTRY = schema_section("$defs", "pool_entry")
_MODEL = schema_section("models", "additionalProperties")


@dataclass(frozen=True)
class PoolEntry:
    name: str
    model: str
    price_in: float
    price_out: float
    description: str = schema_default(_POOL_ENTRY, "description")
    aliases: tuple[str, ...] = schema_default(_POOL_ENTRY, "aliases")
    # resolved per machine when the pool is built (routerr1.precision)
    dtype: str = schema_default(_POOL_ENTRY, "dtype")
    max_new_tokens: int = schema_default(_POOL_ENTRY, "max_new_tokens")
    # how the model's prompts are rendered (its models entry)
    prompt_style: str = schema_default(_MODEL, "prompt_style")
    chat_examples: bool = schema_default(_POOL_ENTRY, "chat_examples")
    # How this entry asks and reads answers (routerr1.pool.messages PROMPTS / EXTRACTORS);
    # extract None: the prompt's own. One model may appear under two names with two prompts.
    prompt: str = schema_default(_POOL_ENTRY, "prompt")
    extract: str | None = schema_default(_POOL_ENTRY, "extract")
    # Serving: "local" runs in process; "openai" calls an OpenAI-compatible endpoint.
    backend: str = schema_default(_POOL_ENTRY, "backend")
    base_url: str | None = None
    api_key_env: str | None = None  # the NAME of the env var holding the key, never the key
    served_model: str | None = None  # the request's model id; defaults to ``name``
    max_concurrency: int = schema_default(_POOL_ENTRY, "max_concurrency")
    timeout_s: float = schema_default(_POOL_ENTRY, "timeout_s", float)
    max_retries: int = schema_default(_POOL_ENTRY, "max_retries")
    temperature: float = schema_default(_POOL_ENTRY, "temperature", float)
    revision: str = ""  # fingerprint of the model's source (the call cache keys on it)
    # "vllm": the pipeline starts `vllm serve` for this entry (routerr1.pool.vllm_launcher)
    serve: str = schema_default(_POOL_ENTRY, "serve")
    vllm: Mapping[str, Any] = field(default_factory=dict, hash=False)


_ROLLOUT = schema_section("rollout")


@dataclass(frozen=True)
class RolloutConfig:
    max_turns: int = schema_default(_ROLLOUT, "max_turns")
    max_turn_tokens: int = schema_default(_ROLLOUT, "max_turn_tokens")
    max_final_tokens: int = schema_default(_ROLLOUT, "max_final_tokens")
    info_max_tokens: int = schema_default(_ROLLOUT, "info_max_tokens")
    max_total_tokens: int = schema_default(_ROLLOUT, "max_total_tokens")
    temperature: float = schema_default(_ROLLOUT, "temperature", float)
    top_p: float = schema_default(_ROLLOUT, "top_p", float)
    compressed_descriptors: bool = schema_default(_ROLLOUT, "compressed_descriptors")
    # descriptors show the measured mean $ per call
    cost_per_call_descriptors: bool = schema_default(_ROLLOUT, "cost_per_call_descriptors")
    batch_size: int = schema_default(_ROLLOUT, "batch_size")
    reuse_kv_cache: bool = schema_default(_ROLLOUT, "reuse_kv_cache")
    decode_segment: int = schema_default(_ROLLOUT, "decode_segment")
    # Router-R1 parity switches (docs/router-r1.md); the defaults are ours
    model_match: str = schema_default(_ROLLOUT, "model_match")
    no_action: str = schema_default(_ROLLOUT, "no_action")
    observations: str = schema_default(_ROLLOUT, "observations")

    def __post_init__(self) -> None:
        check_choice("rollout.model_match", self.model_match, ("exact", "substring"))
        check_choice("rollout.no_action", self.no_action, ("stop", "continue"))
        check_choice("rollout.observations", self.observations, ("routerr1", "router-r1"))


_TRAIN = schema_section("train")


@dataclass(frozen=True)
class TrainConfig:
    alphas: tuple[float, ...] = schema_default(_TRAIN, "alphas")
    # None: the top-level seed only (see train_seeds)
    seeds: tuple[int, ...] | None = schema_default(_TRAIN, "seeds")
    max_steps: int = schema_default(_TRAIN, "max_steps")
    prompts_per_step: int = schema_default(_TRAIN, "prompts_per_step")
    num_generations: int = schema_default(_TRAIN, "num_generations")
    micro_batch_size: int = schema_default(_TRAIN, "micro_batch_size")
    learning_rate: float = schema_default(_TRAIN, "learning_rate", float)
    beta: float = schema_default(_TRAIN, "beta", float)
    outcome: str = schema_default(_TRAIN, "outcome")
    prompt_filter: str = schema_default(_TRAIN, "prompt_filter")
    prompt_balance: str = schema_default(_TRAIN, "prompt_balance")
    cost_on_correct_only: bool = schema_default(_TRAIN, "cost_on_correct_only")
    cost_window: int = schema_default(_TRAIN, "cost_window")
    # Router-R1 parity switches (docs/router-r1.md); the defaults are ours
    format_rules: str = schema_default(_TRAIN, "format_rules")
    cost_tie_value: float | None = schema_default(_TRAIN, "cost_tie_value")
    cost_tokens: str = schema_default(_TRAIN, "cost_tokens")
    lr_scheduler: str = schema_default(_TRAIN, "lr_scheduler")
    weight_decay: float = schema_default(_TRAIN, "weight_decay", float)
    warmup_steps: int = schema_default(_TRAIN, "warmup_steps")
    save_steps: int = schema_default(_TRAIN, "save_steps")
    # auto | bf16 | fp32, resolved on the machine that trains
    precision: str = schema_default(_TRAIN, "precision")
    lora_r: int = schema_default(_TRAIN, "lora_r")
    lora_alpha: int = schema_default(_TRAIN, "lora_alpha")
    share_prompt_prefix: bool = schema_default(_TRAIN, "share_prompt_prefix")
    gradient_checkpointing: bool = schema_default(_TRAIN, "gradient_checkpointing")
    keep_checkpoints: bool = schema_default(_TRAIN, "keep_checkpoints")

    def __post_init__(self) -> None:
        check_choice("train.format_rules", self.format_rules, ("routerr1", "router-r1"))
        check_choice("train.cost_tokens", self.cost_tokens, ("input_output", "output"))
        check_choice("train.lr_scheduler", self.lr_scheduler, ("linear", "constant"))
        check_choice("train.prompt_filter", self.prompt_filter, ("none", "routes_differ"))
        check_choice("train.prompt_balance", self.prompt_balance, ("none", "benchmark"))
        if self.warmup_steps < 0:
            raise ConfigError(f"train.warmup_steps: must be >= 0, got {self.warmup_steps!r}")
        tie = self.cost_tie_value
        if tie is not None and not 0.0 <= tie <= 1.0:
            raise ConfigError(f"train.cost_tie_value: must be in [0, 1] or null, got {tie!r}")


_EVAL = schema_section("eval")


@dataclass(frozen=True)
class EvalConfig:
    baselines: tuple[str, ...] = schema_default(_EVAL, "baselines")
    # Router decoding: temperature 0 is greedy (the default); > 0 samples with top_p, seeded by
    # sample_seed (null: the top-level seed). greedy is the older switch; it must agree.
    greedy: bool | None = schema_default(_EVAL, "greedy")
    temperature: float = schema_default(_EVAL, "temperature", float)
    top_p: float = schema_default(_EVAL, "top_p", float)
    sample_seed: int | None = schema_default(_EVAL, "sample_seed")
    batch_size: int = schema_default(_EVAL, "batch_size")
    knn: Mapping[str, Any] = schema_default(_EVAL, "knn")

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ConfigError(f"eval.temperature: must be >= 0, got {self.temperature!r}")
        if self.greedy is True and self.temperature > 0:
            raise ConfigError(
                f"eval.greedy: true contradicts eval.temperature {self.temperature:g}; "
                "drop greedy (temperature > 0 samples)"
            )
        if self.greedy is False and self.temperature == 0:
            raise ConfigError("eval.greedy: false needs eval.temperature > 0")

    @property
    def sampled(self) -> bool:
        return self.temperature > 0

    def decoding(self, seed: int) -> dict[str, Any]:
        """The router's evaluation decoding, as logged to MLflow and the summary header."""
        if not self.sampled:
            return {"decoding": "greedy"}
        return {
            "decoding": "sampled",
            "temperature": self.temperature,
            "top_p": self.top_p,
            "sample_seed": seed if self.sample_seed is None else self.sample_seed,
        }


ANSWER_SOURCES = ("relay", "gold")
ROUTING_RULES = ("largest", "uniform", "reward", "predicted", "benchmark")
# rules that route by the reward at one alpha: one warm start per alpha
PER_ALPHA_ROUTING = ("reward", "predicted", "benchmark")
_WARM_START = schema_section("warm_start")


@dataclass(frozen=True)
class WarmStartConfig:
    enabled: bool = schema_default(_WARM_START, "enabled")
    epochs: int = schema_default(_WARM_START, "epochs")
    learning_rate: float = schema_default(_WARM_START, "learning_rate", float)
    batch_size: int = schema_default(_WARM_START, "batch_size")
    max_length: int = schema_default(_WARM_START, "max_length")
    n_eval: int = schema_default(_WARM_START, "n_eval")
    # the before-SFT compliance passes only report (an untrained policy rolls to its token caps)
    compliance_before: bool = schema_default(_WARM_START, "compliance_before")
    # None: every training question the pool answered
    max_examples: int | None = schema_default(_WARM_START, "max_examples")
    # "relay": the information's text; "gold": the gold answer
    answer: str = schema_default(_WARM_START, "answer")
    # "largest"/"uniform": one warm start; "reward"/"predicted"/"benchmark": one per alpha
    routing: str = schema_default(_WARM_START, "routing")
    # share of trajectories routed to another model than the rule's, so GRPO still explores
    explore: float = schema_default(_WARM_START, "explore", float)
    # run each SFT batch's common router prompt once (same loss and gradients)
    share_prompt_prefix: bool = schema_default(_WARM_START, "share_prompt_prefix")
    # benchmark -> the kind of question the first thought names before the model ({}: none)
    question_kinds: Mapping[str, str] = schema_default(_WARM_START, "question_kinds")

    def __post_init__(self) -> None:
        if self.answer not in ANSWER_SOURCES:
            raise ValueError(
                f"warm_start.answer must be one of {ANSWER_SOURCES}, got {self.answer!r}"
            )
        if self.routing not in ROUTING_RULES:
            raise ValueError(
                f"warm_start.routing must be one of {ROUTING_RULES}, got {self.routing!r}"
            )
        if not 0.0 <= self.explore < 1.0:
            raise ValueError(f"warm_start.explore must be in [0, 1), got {self.explore!r}")


LAUNCHERS = ("inprocess", "accelerate")
_LAUNCH = schema_section("launch")


@dataclass(frozen=True)
class LaunchConfig:
    """The ``launch`` section of the config (routerr1.launch)."""

    launcher: str = schema_default(_LAUNCH, "launcher")
    accelerate_config: str | None = schema_default(_LAUNCH, "accelerate_config")
    main_process_port: int | None = schema_default(_LAUNCH, "main_process_port")

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"launch.launcher: {self.launcher!r} is not one of {list(LAUNCHERS)}")
        if self.launcher == "accelerate" and not self.accelerate_config:
            raise ValueError("launch.accelerate_config: required with launch.launcher 'accelerate'")
        port = self.main_process_port
        if port is not None and not 1 <= port <= 65535:
            raise ValueError(f"launch.main_process_port: {port!r} is not a TCP port")


def check_benchmark_name(benchmark: str) -> None:
    """A benchmark name becomes a path component and a hub glob: one plain segment."""
    if (
        not isinstance(benchmark, str)
        or not benchmark.strip()
        or benchmark in (".", "..")
        or any(c in benchmark for c in "/\\*?[]")
    ):
        raise ValueError(f"benchmark must be a plain folder name, got {benchmark!r}")


@dataclass(frozen=True)
class SamplingConfig:
    """What to sample. ``n_eval`` is per eval benchmark; ``n_train`` and ``n_profile`` are totals
    split as evenly as possible over their benchmarks. Profile benchmarks default to train's."""

    train_benchmarks: tuple[str, ...]
    eval_benchmarks: tuple[str, ...]
    n_train: int
    n_eval: int
    n_profile: int
    seed: int
    profile_benchmarks: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # Configs arrive from YAML as lists; store tuples so the config stays hashable.
        for name in ("train_benchmarks", "eval_benchmarks", "profile_benchmarks"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise ValueError(f"{name} must be a list of benchmark names, got {value!r}")
            value = tuple(value)
            for bench in value:
                check_benchmark_name(bench)
            if len(set(value)) != len(value):
                raise ValueError(f"{name} has duplicate benchmarks: {list(value)}")
            object.__setattr__(self, name, value)
        for name in ("n_train", "n_eval", "n_profile", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.n_train > 0 and not self.train_benchmarks:
            raise ValueError("train_benchmarks is empty but n_train > 0")
        if self.n_profile > 0 and not self.resolved_profile_benchmarks:
            raise ValueError("profile_benchmarks is empty but n_profile > 0")

    @property
    def resolved_profile_benchmarks(self) -> tuple[str, ...]:
        if self.profile_benchmarks is None:
            return self.train_benchmarks
        return self.profile_benchmarks


@dataclass(frozen=True)
class DataConfig:
    """The ``data`` section and ``data_mirror``: what to sample, and where from."""

    sampling: SamplingConfig
    mirror: Path | None  # a local FlashRAG-layout folder; None reads the hub dataset
    hub_repo: str
    hub_revision: str
    question_mark: bool  # append '?' to every sampled question lacking one (Router-R1)

    @property
    def source_name(self) -> str:
        if self.mirror is not None:
            return str(self.mirror)
        return f"hub:{self.hub_repo}@{self.hub_revision}"
