"""Validating a config: the schema (defaults filled in), then the cross-field rules it cannot
express. Every error names the offending key."""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import yaml

from routerr1.config.run import eval_config
from routerr1.config.schema import ConfigError, load_schema
from routerr1.config.vllm import VllmOptions

log = logging.getLogger(__name__)

_NAME_SEPARATORS = re.compile(r"[\s\-_]+")


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
    errors = sorted(_DefaultingValidator(load_schema()).iter_errors(cfg), key=lambda e: e.path)
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
    kinds = cfg["warm_start"]["question_kinds"]  # empty: type-blind thoughts, nothing to match
    missing = [b for b in cfg["data"]["train_benchmarks"] if b not in kinds]
    if kinds and missing:
        raise ConfigError(
            f"warm_start.question_kinds: no kind for the training benchmarks {missing}; "
            "name one for each, or leave the map empty for type-blind thoughts"
        )
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


def load_configs(
    paths: list[str | Path], overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Read YAML configs layered as ``snakemake --configfile A B`` layers them (nested keys
    merged, later files win), then ``overrides`` the same way, and validate."""
    from snakemake.utils import update_config  # Snakemake's own merge, imported only here

    raw: dict[str, Any] = {}
    for path in paths:
        update_config(raw, yaml.safe_load(Path(path).read_text()) or {})
    update_config(raw, dict(overrides or {}))
    return validate_config(raw)
