"""Typed pipeline configuration.

The YAML is validated against ``workflow/schemas/config.schema.yaml`` (the same schema Snakemake's
``validate`` uses), defaults are filled in, then cross-field rules the schema cannot express are
checked. Every error names the offending key.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import yaml

from routerr1.parse import canonical_model_key

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key."""


def _load_schema() -> dict[str, Any]:
    if not SCHEMA_PATH.exists():  # installed without the workflow tree
        from importlib.resources import files

        return yaml.safe_load(files("routerr1").joinpath("config.schema.yaml").read_text())
    return yaml.safe_load(SCHEMA_PATH.read_text())


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
    errors = sorted(_DefaultingValidator(_load_schema()).iter_errors(cfg), key=lambda e: e.path)
    if errors:
        lines = [f"{_key_path(e)}: {e.message}" for e in errors]
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))
    _check_semantics(cfg)
    return cfg


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
    from routerr1.pool.vllm_launcher import VllmOptions

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


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read a YAML config, apply top-level overrides, validate."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    raw.update(overrides or {})
    return validate_config(raw)


@dataclass(frozen=True)
class PoolEntry:
    name: str
    model: str
    price_in: float
    price_out: float
    description: str = ""
    aliases: tuple[str, ...] = ()
    dtype: str = "bfloat16"
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
    batch_size: int = 32
    reuse_kv_cache: bool = True
    decode_segment: int = 16


@dataclass(frozen=True)
class TrainConfig:
    alphas: tuple[float, ...] = (0.0, 0.5, 0.9)
    max_steps: int = 4
    prompts_per_step: int = 4
    num_generations: int = 4
    micro_batch_size: int = 4
    learning_rate: float = 1e-6
    beta: float = 0.001
    outcome: str = "em"
    cost_on_correct_only: bool = True
    cost_window: int = 1024
    save_steps: int = 2
    bf16: bool = False
    lora_r: int = 0
    lora_alpha: int = 32
    share_prompt_prefix: bool = True
    gradient_checkpointing: bool = False
    keep_checkpoints: bool = False


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
            raise ConfigError(
                "eval.greedy: false needs eval.temperature > 0 (the paper sampled at 1.0)"
            )

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


def warm_start_config(cfg: Mapping[str, Any]):
    from routerr1.warmstart import WarmStartConfig

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
            dtype=p.get("dtype", "bfloat16"),
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
    return TrainConfig(**t)


def eval_config(cfg: Mapping[str, Any]) -> EvalConfig:
    e = dict(cfg.get("eval", {}))
    e["baselines"] = tuple(e.get("baselines", EvalConfig.baselines))
    return EvalConfig(**e)


def alpha_label(alpha: float) -> str:
    """Stable wildcard text for an alpha value (0.5 -> '0.5', 0 -> '0.0')."""
    return repr(float(alpha))
