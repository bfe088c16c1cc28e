"""Typed pipeline configuration.

The YAML is validated against ``workflow/schemas/config.schema.yaml`` (the same schema Snakemake's
``validate`` uses), defaults are filled in, then cross-field rules the schema cannot express are
checked. Every error names the offending key.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import yaml

log = logging.getLogger(__name__)

_NAME_SEPARATORS = re.compile(r"[\s\-_]+")

# Package data (a link to workflow/schemas/config.schema.yaml in the repository; a copy in a
# built wheel), so an installed routerr1 validates without the workflow tree
SCHEMA_RESOURCE = "config.schema.yaml"


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key."""


@functools.cache
def _schema() -> dict[str, Any]:
    from importlib.resources import files

    return yaml.safe_load(files("routerr1").joinpath(SCHEMA_RESOURCE).read_text())


def _section(*path: str) -> Mapping[str, Any]:
    """The ``properties`` of a schema object: a top-level section, or a ``$defs`` entry."""
    node = _schema()
    for key in path:
        node = node[key] if key == "$defs" else node.get("properties", node)[key]
    return node["properties"]


def _default(section: Mapping[str, Any], key: str, cast: Callable[[Any], Any] | None = None):
    """A dataclass field whose default is the schema's (the one place defaults live); lists
    become tuples, so the frozen dataclasses stay hashable; ``cast`` (float) keeps a float field
    a float where the YAML default is written as an integer."""
    value = copy.deepcopy(section[key]["default"])
    if isinstance(value, dict):
        return field(default_factory=lambda: copy.deepcopy(value), hash=False)
    if isinstance(value, list):
        value = tuple(value)
    if cast is not None and value is not None:
        value = cast(value)
    return field(default=value)


def _with_defaults(validator_class):
    validate_props = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_DefaultingValidator = _with_defaults(jsonschema.Draft202012Validator)


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<root>"


def validate_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate against the schema, fill defaults, and check cross-field rules."""
    cfg = copy.deepcopy(dict(raw))
    _migrate_train_bf16(cfg)
    errors = sorted(_DefaultingValidator(_schema()).iter_errors(cfg), key=lambda e: e.path)
    if errors:
        lines = [f"{_key_path(e)}: {e.message}" for e in errors]
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))
    _check_semantics(cfg)
    return cfg


def _migrate_train_bf16(cfg: dict[str, Any]) -> None:
    """``train.bf16: true|false`` (before ``train.precision``) still reads, as bf16|fp32."""
    train = cfg.get("train")
    if not isinstance(train, dict) or "bf16" not in train:
        return
    # Snakemake's validate may already have filled the schema default (auto)
    if train.get("precision", "auto") != "auto":
        raise ConfigError(
            "train.bf16: replaced by train.precision; set only train.precision (auto|bf16|fp32)"
        )
    if not isinstance(train["bf16"], bool):
        raise ConfigError(f"train.bf16: must be true or false, got {train['bf16']!r}")
    train = cfg["train"] = dict(train)
    train["precision"] = "bf16" if train.pop("bf16") else "fp32"
    log.warning(
        "train.bf16: deprecated; read as train.precision: %s (auto picks bf16 only where the "
        "hardware runs it natively)",
        train["precision"],
    )


def _check_serving(entry: Mapping[str, Any], where: str) -> None:
    """Backend fields: ``base_url`` (http/https) only and always with the openai backend."""
    backend = entry["backend"]
    url = entry.get("base_url")
    if entry["serve"] == "vllm":
        _check_vllm_serve(entry, where)
        return
    if entry.get("vllm") is not None:
        raise ConfigError(f"{where}.vllm: only used with serve 'vllm'")
    if backend == "openai":
        if not url:
            raise ConfigError(f"{where}.base_url: required when backend is 'openai'")
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise ConfigError(
                f"{where}.base_url: {url!r} must be an http:// or https:// URL with a host"
            )
        return
    for key in ("base_url", "api_key_env", "served_model"):
        if entry.get(key) is not None:
            raise ConfigError(f"{where}.{key}: only valid with backend 'openai' (is {backend!r})")
    if entry["temperature"] != 0.0:
        raise ConfigError(f"{where}.temperature: the local backend decodes greedily; use 0")


def _check_vllm_serve(entry: Mapping[str, Any], where: str) -> None:
    """``serve: vllm``: an openai entry whose endpoint the pipeline starts (so no base_url)."""
    backend = entry["backend"]
    if backend != "openai":
        raise ConfigError(
            f"{where}.serve: 'vllm' needs backend 'openai' (the pipeline calls the server it "
            f"starts over the OpenAI API), got backend {backend!r}"
        )
    if entry.get("base_url") is not None:
        raise ConfigError(
            f"{where}.base_url: conflicts with serve 'vllm' (the launched server listens on "
            "127.0.0.1 at vllm.port or a free port); drop base_url, or serve: none"
        )
    try:
        VllmOptions.from_mapping(entry.get("vllm"), f"{where}.vllm")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _check_prompt(entry: Mapping[str, Any], models: Mapping[str, Any], where: str) -> None:
    """``prompt`` and ``extract`` name registry entries the model's prompt style supports."""
    from routerr1.pool.messages import check_prompt, resolve_extract

    style = models[entry["model"]]["prompt_style"]
    prompt = entry["prompt"]
    try:
        check_prompt(prompt, style, bool(entry["chat_examples"]))
        resolve_extract(prompt, entry["extract"])
    except ValueError as exc:
        detail = str(exc)
        if detail.startswith("prompt: ") and "needs a model" in detail:
            detail += f" (models.{entry['model']}.prompt_style)"
        raise ConfigError(f"{where}.{detail}") from None


def _check_semantics(cfg: dict[str, Any]) -> None:
    models = cfg["models"]
    for list_key in ("pool", "pool_unseen"):
        for i, entry in enumerate(cfg[list_key]):
            _check_serving(entry, f"{list_key}[{i}]")
            if entry["model"] in models:  # an unknown key is reported below
                _check_prompt(entry, models, f"{list_key}[{i}]")
    # unseen models join the pool at evaluation time, so names must be unique across both
    seen: dict[str, str] = {}
    for list_key in ("pool", "pool_unseen"):
        for i, entry in enumerate(cfg[list_key]):
            where = f"{list_key}[{i}]"
            if entry["model"] not in models:
                raise ConfigError(
                    f"{where}.model: unknown model key {entry['model']!r}; known: {sorted(models)}"
                )
            for label in [entry["name"], *entry["aliases"]]:
                key = canonical_model_key(label)
                if key in seen:
                    raise ConfigError(
                        f"{where}.name: {label!r} duplicates pool model name {seen[key]!r}"
                    )
                seen[key] = label
    if cfg["policy"]["model"] not in models:
        raise ConfigError(f"policy.model: unknown model key {cfg['policy']['model']!r}")
    eval_config(cfg)  # greedy / temperature agree
    mirror = cfg["data_mirror"]
    if mirror is not None and not Path(mirror).is_dir():
        raise ConfigError(f"data_mirror: folder {mirror!r} does not exist")
    for key, source in models.items():
        kind = source["source"]["kind"]
        if kind == "pypi_gguf" and "sha256" not in source["source"]:
            raise ConfigError(f"models.{key}.source.sha256: required for pypi_gguf sources")
        if kind == "local" and not Path(source["source"].get("path", "")).is_dir():
            raise ConfigError(
                f"models.{key}.source.path: folder {source['source'].get('path')!r} does not exist"
            )


def canonical_model_key(name: str) -> str:
    """Lowercase and drop whitespace, '-' and '_' ("qwen2.5 coder 1.5b" == "Qwen2.5-Coder-1.5B")."""
    return _NAME_SEPARATORS.sub("", name.lower())


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read a YAML config, apply top-level overrides, validate."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    raw.update(overrides or {})
    return validate_config(raw)


def _check_choice(field: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{field}: {value!r} is not one of {list(choices)}")


# Each section's dataclass takes its field defaults from the schema (``_default``), the one place
# defaults are written; a validated dict has every key, so the builders below pass them through.
_POOL_ENTRY = _section("$defs", "pool_entry")
_VLLM_SERVE = _section("$defs", "pool_entry", "vllm")
_MODEL = _section("models", "additionalProperties")


@dataclass(frozen=True)
class PoolEntry:
    name: str
    model: str
    price_in: float
    price_out: float
    description: str = _default(_POOL_ENTRY, "description")
    aliases: tuple[str, ...] = _default(_POOL_ENTRY, "aliases")
    # resolved per machine when the pool is built (routerr1.precision)
    dtype: str = _default(_POOL_ENTRY, "dtype")
    max_new_tokens: int = _default(_POOL_ENTRY, "max_new_tokens")
    # how the model's prompts are rendered (its models entry)
    prompt_style: str = _default(_MODEL, "prompt_style")
    chat_examples: bool = _default(_POOL_ENTRY, "chat_examples")
    # How this entry asks and reads answers (routerr1.pool.messages PROMPTS / EXTRACTORS);
    # extract None: the prompt's own. One model may appear under two names with two prompts.
    prompt: str = _default(_POOL_ENTRY, "prompt")
    extract: str | None = _default(_POOL_ENTRY, "extract")
    # Serving: "local" runs in process; "openai" calls an OpenAI-compatible endpoint.
    backend: str = _default(_POOL_ENTRY, "backend")
    base_url: str | None = None
    api_key_env: str | None = None  # the NAME of the env var holding the key, never the key
    served_model: str | None = None  # the request's model id; defaults to ``name``
    max_concurrency: int = _default(_POOL_ENTRY, "max_concurrency")
    timeout_s: float = _default(_POOL_ENTRY, "timeout_s", float)
    max_retries: int = _default(_POOL_ENTRY, "max_retries")
    temperature: float = _default(_POOL_ENTRY, "temperature", float)
    revision: str = ""  # fingerprint of the model's source (the call cache keys on it)
    # "vllm": the pipeline starts `vllm serve` for this entry (routerr1.pool.vllm_launcher)
    serve: str = _default(_POOL_ENTRY, "serve")
    vllm: Mapping[str, Any] = field(default_factory=dict, hash=False)


_ROLLOUT = _section("rollout")


@dataclass(frozen=True)
class RolloutConfig:
    max_turns: int = _default(_ROLLOUT, "max_turns")
    max_turn_tokens: int = _default(_ROLLOUT, "max_turn_tokens")
    max_final_tokens: int = _default(_ROLLOUT, "max_final_tokens")
    info_max_tokens: int = _default(_ROLLOUT, "info_max_tokens")
    max_total_tokens: int = _default(_ROLLOUT, "max_total_tokens")
    temperature: float = _default(_ROLLOUT, "temperature", float)
    top_p: float = _default(_ROLLOUT, "top_p", float)
    compressed_descriptors: bool = _default(_ROLLOUT, "compressed_descriptors")
    # descriptors show the measured mean $ per call
    cost_per_call_descriptors: bool = _default(_ROLLOUT, "cost_per_call_descriptors")
    batch_size: int = _default(_ROLLOUT, "batch_size")
    reuse_kv_cache: bool = _default(_ROLLOUT, "reuse_kv_cache")
    decode_segment: int = _default(_ROLLOUT, "decode_segment")
    # Router-R1 parity switches (docs/router-r1.md); the defaults are ours
    model_match: str = _default(_ROLLOUT, "model_match")
    no_action: str = _default(_ROLLOUT, "no_action")
    observations: str = _default(_ROLLOUT, "observations")

    def __post_init__(self) -> None:
        _check_choice("rollout.model_match", self.model_match, ("exact", "substring"))
        _check_choice("rollout.no_action", self.no_action, ("stop", "continue"))
        _check_choice("rollout.observations", self.observations, ("routerr1", "router-r1"))


_TRAIN = _section("train")


@dataclass(frozen=True)
class TrainConfig:
    alphas: tuple[float, ...] = _default(_TRAIN, "alphas")
    # None: the top-level seed only (see train_seeds)
    seeds: tuple[int, ...] | None = _default(_TRAIN, "seeds")
    max_steps: int = _default(_TRAIN, "max_steps")
    prompts_per_step: int = _default(_TRAIN, "prompts_per_step")
    num_generations: int = _default(_TRAIN, "num_generations")
    micro_batch_size: int = _default(_TRAIN, "micro_batch_size")
    learning_rate: float = _default(_TRAIN, "learning_rate", float)
    beta: float = _default(_TRAIN, "beta", float)
    outcome: str = _default(_TRAIN, "outcome")
    cost_on_correct_only: bool = _default(_TRAIN, "cost_on_correct_only")
    cost_window: int = _default(_TRAIN, "cost_window")
    # Router-R1 parity switches (docs/router-r1.md); the defaults are ours
    format_rules: str = _default(_TRAIN, "format_rules")
    cost_tie_value: float | None = _default(_TRAIN, "cost_tie_value")
    cost_tokens: str = _default(_TRAIN, "cost_tokens")
    lr_scheduler: str = _default(_TRAIN, "lr_scheduler")
    weight_decay: float = _default(_TRAIN, "weight_decay", float)
    save_steps: int = _default(_TRAIN, "save_steps")
    # auto | bf16 | fp32, resolved on the machine that trains
    precision: str = _default(_TRAIN, "precision")
    lora_r: int = _default(_TRAIN, "lora_r")
    lora_alpha: int = _default(_TRAIN, "lora_alpha")
    share_prompt_prefix: bool = _default(_TRAIN, "share_prompt_prefix")
    gradient_checkpointing: bool = _default(_TRAIN, "gradient_checkpointing")
    keep_checkpoints: bool = _default(_TRAIN, "keep_checkpoints")

    def __post_init__(self) -> None:
        _check_choice("train.format_rules", self.format_rules, ("routerr1", "router-r1"))
        _check_choice("train.cost_tokens", self.cost_tokens, ("input_output", "output"))
        _check_choice("train.lr_scheduler", self.lr_scheduler, ("linear", "constant"))
        tie = self.cost_tie_value
        if tie is not None and not 0.0 <= tie <= 1.0:
            raise ConfigError(f"train.cost_tie_value: must be in [0, 1] or null, got {tie!r}")


_EVAL = _section("eval")


@dataclass(frozen=True)
class EvalConfig:
    baselines: tuple[str, ...] = _default(_EVAL, "baselines")
    # Router decoding: temperature 0 is greedy (the default); > 0 samples with top_p, seeded by
    # sample_seed (null: the top-level seed). greedy is the older switch; it must agree.
    greedy: bool | None = _default(_EVAL, "greedy")
    temperature: float = _default(_EVAL, "temperature", float)
    top_p: float = _default(_EVAL, "top_p", float)
    sample_seed: int | None = _default(_EVAL, "sample_seed")
    batch_size: int = _default(_EVAL, "batch_size")
    knn: Mapping[str, Any] = _default(_EVAL, "knn")

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
ROUTING_RULES = ("largest", "reward", "predicted")
# rules that route by the reward at one alpha: one warm start per alpha
PER_ALPHA_ROUTING = ("reward", "predicted")
_WARM_START = _section("warm_start")


@dataclass(frozen=True)
class WarmStartConfig:
    enabled: bool = _default(_WARM_START, "enabled")
    epochs: int = _default(_WARM_START, "epochs")
    learning_rate: float = _default(_WARM_START, "learning_rate", float)
    batch_size: int = _default(_WARM_START, "batch_size")
    max_length: int = _default(_WARM_START, "max_length")
    n_eval: int = _default(_WARM_START, "n_eval")
    # None: every training question the pool answered
    max_examples: int | None = _default(_WARM_START, "max_examples")
    # "relay": the information's text; "gold": the gold answer
    answer: str = _default(_WARM_START, "answer")
    # "largest": one warm start; "reward"/"predicted": one per alpha
    routing: str = _default(_WARM_START, "routing")
    share_prompt_prefix: bool = _default(_WARM_START, "share_prompt_prefix")

    def __post_init__(self) -> None:
        if self.answer not in ANSWER_SOURCES:
            raise ValueError(
                f"warm_start.answer must be one of {ANSWER_SOURCES}, got {self.answer!r}"
            )
        if self.routing not in ROUTING_RULES:
            raise ValueError(
                f"warm_start.routing must be one of {ROUTING_RULES}, got {self.routing!r}"
            )


LAUNCHERS = ("inprocess", "accelerate")
_LAUNCH = _section("launch")


@dataclass(frozen=True)
class LaunchConfig:
    """The ``launch`` section of the config (routerr1.launch)."""

    launcher: str = _default(_LAUNCH, "launcher")
    accelerate_config: str | None = _default(_LAUNCH, "accelerate_config")
    main_process_port: int | None = _default(_LAUNCH, "main_process_port")

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"launch.launcher: {self.launcher!r} is not one of {list(LAUNCHERS)}")
        if self.launcher == "accelerate" and not self.accelerate_config:
            raise ValueError("launch.accelerate_config: required with launch.launcher 'accelerate'")
        port = self.main_process_port
        if port is not None and not 1 <= port <= 65535:
            raise ValueError(f"launch.main_process_port: {port!r} is not a TCP port")


VLLM_MODES = ("colocate", "server")
_VLLM = _section("vllm")


@dataclass(frozen=True)
class VllmConfig:
    """The ``vllm`` section of the config: policy rollouts through TRL's vLLM (training)."""

    enabled: bool = _default(_VLLM, "enabled")
    mode: str = _default(_VLLM, "mode")
    gpu_memory_utilization: float = _default(_VLLM, "gpu_memory_utilization", float)
    server_base_url: str | None = _default(_VLLM, "server_base_url")
    enable_sleep_mode: bool = _default(_VLLM, "enable_sleep_mode")

    def __post_init__(self) -> None:
        if self.mode not in VLLM_MODES:
            raise ValueError(f"vllm.mode: {self.mode!r} is not one of {list(VLLM_MODES)}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(
                f"vllm.gpu_memory_utilization: {self.gpu_memory_utilization!r} is not in (0, 1]"
            )
        if self.enabled and self.mode == "server" and not self.server_base_url:
            raise ValueError("vllm.server_base_url: required with vllm.mode 'server'")


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


# Flags the launcher sets itself; extra_args may not repeat them (the options say it instead).
MANAGED_FLAGS = {
    "--host": "the server always binds 127.0.0.1",
    "--port": "use vllm.port",
    "--served-model-name": "use the entry's served_model",
    "--tensor-parallel-size": "use vllm.tensor_parallel_size",
    "-tp": "use vllm.tensor_parallel_size",
    "--gpu-memory-utilization": "use vllm.gpu_memory_utilization",
    "--api-key": "use the entry's api_key_env (passed as VLLM_API_KEY, never on the command line)",
}


@dataclass(frozen=True)
class VllmOptions:
    """The ``vllm:`` block of a pool entry (see the config schema for each field)."""

    tensor_parallel_size: int = _default(_VLLM_SERVE, "tensor_parallel_size")
    gpu_memory_utilization: float = _default(_VLLM_SERVE, "gpu_memory_utilization", float)
    port: int | None = _default(_VLLM_SERVE, "port")
    extra_args: tuple[str, ...] = _default(_VLLM_SERVE, "extra_args")
    startup_timeout_s: float = _default(_VLLM_SERVE, "startup_timeout_s", float)
    stop_timeout_s: float = _default(_VLLM_SERVE, "stop_timeout_s", float)
    command: tuple[str, ...] | None = _default(_VLLM_SERVE, "command")
    model: str | None = _default(_VLLM_SERVE, "model")
    log_dir: str = _default(_VLLM_SERVE, "log_dir")
    env: Mapping[str, str] = _default(_VLLM_SERVE, "env")

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None, where: str = "vllm") -> VllmOptions:
        """Options from config, checked; ValueError names ``where.<field>``."""
        raw = dict(raw or {})
        unknown = sorted(set(raw) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"{where}.{unknown[0]}: unknown option")

        def number(key: str, low: float, high: float | None = None, integer: bool = False):
            value = raw.get(key, getattr(cls, key))
            ok = isinstance(value, int) if integer else isinstance(value, (int, float))
            if isinstance(value, bool) or not ok or value < low or (high and value > high):
                span = f">= {low}" if high is None else f"in ({low}, {high}]"
                raise ValueError(f"{where}.{key}: {value!r} must be a number {span}")
            return value

        def strings(key: str) -> tuple[str, ...] | None:
            value = raw.get(key)
            if value is None:
                return None
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{where}.{key}: {value!r} must be a list of strings")
            return tuple(value)

        port = raw.get("port")
        if port is not None and (
            isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535
        ):
            raise ValueError(f"{where}.port: {port!r} must be null or a port in 1..65535")
        gpu = number("gpu_memory_utilization", 0.0, 1.0)
        if gpu <= 0:
            raise ValueError(f"{where}.gpu_memory_utilization: {gpu!r} must be in (0, 1]")
        extra = strings("extra_args") or ()
        for arg in extra:
            flag = arg.split("=", 1)[0]
            if flag in MANAGED_FLAGS:
                raise ValueError(
                    f"{where}.extra_args: {flag!r} is set by the launcher; {MANAGED_FLAGS[flag]}"
                )
        command = strings("command")
        if command is not None and not command:
            raise ValueError(f"{where}.command: must not be empty (null means 'vllm serve')")
        env = raw.get("env") or {}
        if not isinstance(env, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()
        ):
            raise ValueError(f"{where}.env: {env!r} must map names to strings")
        for key in ("model", "log_dir"):
            if raw.get(key) is not None and not (isinstance(raw[key], str) and raw[key]):
                raise ValueError(f"{where}.{key}: {raw[key]!r} must be a non-empty string")
        return cls(
            tensor_parallel_size=number("tensor_parallel_size", 1, integer=True),
            gpu_memory_utilization=float(gpu),
            port=port,
            extra_args=extra,
            startup_timeout_s=float(number("startup_timeout_s", 1e-3)),
            stop_timeout_s=float(number("stop_timeout_s", 0.0)),
            command=command,
            model=raw.get("model"),
            log_dir=raw.get("log_dir") or cls.log_dir,
            env=dict(env),
        )


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
