"""Typed pipeline configuration.

The YAML is validated against ``workflow/schemas/config.schema.yaml`` (the same schema Snakemake's
``validate`` uses), defaults are filled in, then cross-field rules the schema cannot express are
checked. Every error names the offending key.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
from collections.abc import Mapping
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


def _load_schema() -> dict[str, Any]:
    from importlib.resources import files

    return yaml.safe_load(files("routerr1").joinpath(SCHEMA_RESOURCE).read_text())


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
    errors = sorted(_DefaultingValidator(_load_schema()).iter_errors(cfg), key=lambda e: e.path)
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
    backend = entry.get("backend", "local")
    url = entry.get("base_url")
    if entry.get("serve", "none") == "vllm":
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
    if entry.get("temperature", 0.0) != 0.0:
        raise ConfigError(f"{where}.temperature: the local backend decodes greedily; use 0")


def _check_vllm_serve(entry: Mapping[str, Any], where: str) -> None:
    """``serve: vllm``: an openai entry whose endpoint the pipeline starts (so no base_url)."""
    backend = entry.get("backend", "local")
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

    style = (models.get(entry["model"]) or {}).get("prompt_style", "chat")
    prompt = entry.get("prompt", "short")
    try:
        check_prompt(prompt, style, bool(entry.get("chat_examples", False)))
        resolve_extract(prompt, entry.get("extract"))
    except ValueError as exc:
        detail = str(exc)
        if detail.startswith("prompt: ") and "needs a model" in detail:
            detail += f" (models.{entry['model']}.prompt_style)"
        raise ConfigError(f"{where}.{detail}") from None


def _check_semantics(cfg: dict[str, Any]) -> None:
    models = cfg["models"]
    for list_key in ("pool", "pool_unseen"):
        for i, entry in enumerate(cfg.get(list_key) or []):
            _check_serving(entry, f"{list_key}[{i}]")
            if entry["model"] in models:  # an unknown key is reported below
                _check_prompt(entry, models, f"{list_key}[{i}]")
    # unseen models join the pool at evaluation time, so names must be unique across both
    seen: dict[str, str] = {}
    for list_key in ("pool", "pool_unseen"):
        for i, entry in enumerate(cfg.get(list_key) or []):
            where = f"{list_key}[{i}]"
            if entry["model"] not in models:
                raise ConfigError(
                    f"{where}.model: unknown model key {entry['model']!r}; known: {sorted(models)}"
                )
            for label in [entry["name"], *entry.get("aliases", [])]:
                key = canonical_model_key(label)
                if key in seen:
                    raise ConfigError(
                        f"{where}.name: {label!r} duplicates pool model name {seen[key]!r}"
                    )
                seen[key] = label
    if cfg["policy"]["model"] not in models:
        raise ConfigError(f"policy.model: unknown model key {cfg['policy']['model']!r}")
    eval_config(cfg)  # greedy / temperature agree
    mirror = cfg.get("data_mirror")
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


@dataclass(frozen=True)
class PoolEntry:
    name: str
    model: str
    price_in: float
    price_out: float
    description: str = ""
    aliases: tuple[str, ...] = ()
    dtype: str = "auto"  # resolved per machine when the pool is built (routerr1.precision)
    max_new_tokens: int = 32
    prompt_style: str = "chat"  # how the model's prompts are rendered (its models entry)
    chat_examples: bool = False
    # How this entry asks and reads answers (routerr1.pool.messages PROMPTS / EXTRACTORS);
    # extract None: the prompt's own. One model may appear under two names with two prompts.
    prompt: str = "short"
    extract: str | None = None
    # Serving: "local" runs in process; "openai" calls an OpenAI-compatible endpoint.
    backend: str = "local"
    base_url: str | None = None
    api_key_env: str | None = None  # the NAME of the env var holding the key, never the key
    served_model: str | None = None  # the request's model id; defaults to ``name``
    max_concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 4
    temperature: float = 0.0
    revision: str = ""  # fingerprint of the model's source (the call cache keys on it)
    # "vllm": the pipeline starts `vllm serve` for this entry (routerr1.pool.vllm_launcher)
    serve: str = "none"
    vllm: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class RolloutConfig:
    max_turns: int = 4
    max_turn_tokens: int = 128
    max_final_tokens: int = 64
    info_max_tokens: int = 64
    max_total_tokens: int = 768
    temperature: float = 1.0
    top_p: float = 1.0
    compressed_descriptors: bool = False
    cost_per_call_descriptors: bool = False  # descriptors show the measured mean $ per call
    batch_size: int = 32
    reuse_kv_cache: bool = True
    decode_segment: int = 16
    # Router-R1 parity switches (docs/router-r1.md); the defaults are ours
    model_match: str = "exact"
    no_action: str = "stop"
    observations: str = "routerr1"

    def __post_init__(self) -> None:
        _check_choice("rollout.model_match", self.model_match, ("exact", "substring"))
        _check_choice("rollout.no_action", self.no_action, ("stop", "continue"))
        _check_choice("rollout.observations", self.observations, ("routerr1", "router-r1"))


@dataclass(frozen=True)
class TrainConfig:
    alphas: tuple[float, ...] = (0.0, 0.5, 0.9)
    seeds: tuple[int, ...] | None = None  # None: the top-level seed only (see train_seeds)
    max_steps: int = 4
    prompts_per_step: int = 4
    num_generations: int = 4
    micro_batch_size: int = 4
    learning_rate: float = 1e-6
    beta: float = 0.001
    outcome: str = "em"
    cost_on_correct_only: bool = True
    cost_window: int = 1024
    # Router-R1 parity switches (docs/router-r1.md); the defaults are ours
    format_rules: str = "routerr1"
    cost_tie_value: float | None = None
    cost_tokens: str = "input_output"
    lr_scheduler: str = "linear"
    weight_decay: float = 0.0
    save_steps: int = 2
    precision: str = "auto"  # auto | bf16 | fp32, resolved on the machine that trains
    lora_r: int = 0
    lora_alpha: int = 32
    share_prompt_prefix: bool = True
    gradient_checkpointing: bool = False
    keep_checkpoints: bool = False

    def __post_init__(self) -> None:
        _check_choice("train.format_rules", self.format_rules, ("routerr1", "router-r1"))
        _check_choice("train.cost_tokens", self.cost_tokens, ("input_output", "output"))
        _check_choice("train.lr_scheduler", self.lr_scheduler, ("linear", "constant"))
        tie = self.cost_tie_value
        if tie is not None and not 0.0 <= tie <= 1.0:
            raise ConfigError(f"train.cost_tie_value: must be in [0, 1] or null, got {tie!r}")


@dataclass(frozen=True)
class EvalConfig:
    baselines: tuple[str, ...] = ("single", "prompt_router")
    # Router decoding: temperature 0 is greedy (the default); > 0 samples with top_p, seeded by
    # sample_seed (null: the top-level seed). greedy is the older switch; it must agree.
    greedy: bool | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    sample_seed: int | None = None
    batch_size: int = 16
    knn: Mapping[str, Any] = field(default_factory=dict)

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


@dataclass(frozen=True)
class WarmStartConfig:
    enabled: bool = True
    epochs: int = 2
    learning_rate: float = 5e-5
    batch_size: int = 8
    max_length: int = 1024
    n_eval: int = 64
    max_examples: int | None = None  # None: every training question the pool answered
    answer: str = "relay"  # "relay": the information's text; "gold": the gold answer
    routing: str = "largest"  # "largest": one warm start; "reward"/"predicted": one per alpha

    def __post_init__(self) -> None:
        if self.answer not in ANSWER_SOURCES:
            raise ValueError(
                f"warm_start.answer must be one of {ANSWER_SOURCES}, got {self.answer!r}"
            )
        if self.routing not in ROUTING_RULES:
            raise ValueError(
                f"warm_start.routing must be one of {ROUTING_RULES}, got {self.routing!r}"
            )


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

    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.85
    port: int | None = None
    extra_args: tuple[str, ...] = ()
    startup_timeout_s: float = 900.0
    stop_timeout_s: float = 30.0
    command: tuple[str, ...] | None = None
    model: str | None = None
    log_dir: str = "results/logs/vllm"
    env: Mapping[str, str] = field(default_factory=dict, hash=False)

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


def extended_pool_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The config with ``pool`` = training pool + ``pool_unseen``.

    Names, aliases and model keys of both lists were checked together by config validation.
    """
    unseen = list(cfg.get("pool_unseen") or [])
    if not unseen:
        raise ConfigError("pool_unseen: empty; list the models the routers never saw")
    return {**cfg, "pool": [*cfg["pool"], *unseen]}


def warm_start_config(cfg: Mapping[str, Any]) -> WarmStartConfig:
    return WarmStartConfig(**cfg.get("warm_start", {}))


def pool_entries(cfg: Mapping[str, Any]) -> list[PoolEntry]:
    models = cfg["models"]
    return [
        PoolEntry(
            name=p["name"],
            model=p["model"],
            price_in=float(p["price_in"]),
            price_out=float(p["price_out"]),
            description=p.get("description", ""),
            aliases=tuple(p.get("aliases", ())),
            dtype=p.get("dtype", "auto"),
            max_new_tokens=int(p.get("max_new_tokens", 32)),
            prompt_style=models[p["model"]].get("prompt_style", "chat"),
            chat_examples=bool(p.get("chat_examples", False)),
            prompt=p.get("prompt", "short"),
            extract=p.get("extract"),
            backend=p.get("backend", "local"),
            base_url=p.get("base_url"),
            api_key_env=p.get("api_key_env"),
            served_model=p.get("served_model"),
            max_concurrency=int(p.get("max_concurrency", 8)),
            timeout_s=float(p.get("timeout_s", 60.0)),
            max_retries=int(p.get("max_retries", 4)),
            temperature=float(p.get("temperature", 0.0)),
            revision=source_fingerprint(models[p["model"]].get("source", {})),
            serve=p.get("serve", "none"),
            vllm=dict(p.get("vllm") or {}),
        )
        for p in cfg["pool"]
    ]


def source_fingerprint(source: Mapping[str, Any]) -> str:
    """Short sha256 of a model source (repo + revision, wheel pin + checksum, or path)."""
    blob = json.dumps(dict(source), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def rollout_config(cfg: Mapping[str, Any]) -> RolloutConfig:
    return RolloutConfig(**cfg.get("rollout", {}))


def train_config(cfg: Mapping[str, Any]) -> TrainConfig:
    t = dict(cfg.get("train", {}))
    t["alphas"] = tuple(float(a) for a in t.get("alphas", TrainConfig.alphas))
    if t.get("seeds") is not None:
        t["seeds"] = tuple(int(s) for s in t["seeds"])
    return TrainConfig(**t)


def train_seeds(cfg: Mapping[str, Any]) -> list[int]:
    """The training seeds: ``train.seeds``, or the top-level seed when that is null."""
    seeds = (cfg.get("train") or {}).get("seeds")
    return [int(s) for s in seeds] if seeds is not None else [int(cfg.get("seed", 0))]


def seed_level(cfg: Mapping[str, Any], seed: int | None) -> str:
    """Path and run-key suffix of a training seed: "" for the top-level seed (the one-seed
    layout every earlier run wrote), "/seed~S" for any other."""
    if seed is None or int(seed) == int(cfg.get("seed", 0)):
        return ""
    return f"/seed~{int(seed)}"


def eval_config(cfg: Mapping[str, Any]) -> EvalConfig:
    e = dict(cfg.get("eval", {}))
    e["baselines"] = tuple(e.get("baselines", EvalConfig.baselines))
    return EvalConfig(**e)


def alpha_label(alpha: float) -> str:
    """Stable wildcard text for an alpha value (0.5 -> '0.5', 0 -> '0.0')."""
    return repr(float(alpha))
