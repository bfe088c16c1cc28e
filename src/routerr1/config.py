"""Typed pipeline configuration.

The YAML is validated against ``workflow/schemas/config.schema.yaml`` (the same schema Snakemake's
``validate`` uses), defaults are filled in, then cross-field rules the schema cannot express are
checked. Every error names the offending key.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

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


def _canonical(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch not in " \t-_")


def _check_semantics(cfg: dict[str, Any]) -> None:
    models = cfg["models"]
    seen: dict[str, str] = {}
    for i, entry in enumerate(cfg["pool"]):
        where = f"pool[{i}]"
        if entry["model"] not in models:
            raise ConfigError(
                f"{where}.model: unknown model key {entry['model']!r}; known: {sorted(models)}"
            )
        for label in [entry["name"], *entry.get("aliases", [])]:
            key = _canonical(label)
            if key in seen:
                raise ConfigError(
                    f"{where}.name: {label!r} duplicates pool model name {seen[key]!r}"
                )
            seen[key] = label
    if cfg["policy"]["model"] not in models:
        raise ConfigError(f"policy.model: unknown model key {cfg['policy']['model']!r}")
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
    prompt_style: str = "chat"
    chat_examples: bool = False


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


@dataclass(frozen=True)
class EvalConfig:
    baselines: tuple[str, ...] = ("single", "prompt_router")
    greedy: bool = True
    batch_size: int = 16


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
        )
        for p in cfg["pool"]
    ]


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
