"""vLLM options: the ``vllm`` section (policy rollouts in training) and a pool entry's
``vllm:`` block (the server the pipeline starts for ``serve: vllm``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from routerr1.config.schema import schema_default, schema_section

VLLM_MODES = ("colocate", "server")
_VLLM = schema_section("vllm")


@dataclass(frozen=True)
class VllmConfig:
    """The ``vllm`` section of the config: policy rollouts through TRL's vLLM (training)."""

    enabled: bool = schema_default(_VLLM, "enabled")
    mode: str = schema_default(_VLLM, "mode")
    gpu_memory_utilization: float = schema_default(_VLLM, "gpu_memory_utilization", float)
    server_base_url: str | None = schema_default(_VLLM, "server_base_url")
    enable_sleep_mode: bool = schema_default(_VLLM, "enable_sleep_mode")

    def __post_init__(self) -> None:
        if self.mode not in VLLM_MODES:
            raise ValueError(f"vllm.mode: {self.mode!r} is not one of {list(VLLM_MODES)}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(
                f"vllm.gpu_memory_utilization: {self.gpu_memory_utilization!r} is not in (0, 1]"
            )
        if self.enabled and self.mode == "server" and not self.server_base_url:
            raise ValueError("vllm.server_base_url: required with vllm.mode 'server'")


_VLLM_SERVE = schema_section("$defs", "pool_entry", "vllm")

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

    tensor_parallel_size: int = schema_default(_VLLM_SERVE, "tensor_parallel_size")
    gpu_memory_utilization: float = schema_default(_VLLM_SERVE, "gpu_memory_utilization", float)
    port: int | None = schema_default(_VLLM_SERVE, "port")
    extra_args: tuple[str, ...] = schema_default(_VLLM_SERVE, "extra_args")
    startup_timeout_s: float = schema_default(_VLLM_SERVE, "startup_timeout_s", float)
    stop_timeout_s: float = schema_default(_VLLM_SERVE, "stop_timeout_s", float)
    command: tuple[str, ...] | None = schema_default(_VLLM_SERVE, "command")
    model: str | None = schema_default(_VLLM_SERVE, "model")
    log_dir: str = schema_default(_VLLM_SERVE, "log_dir")
    env: Mapping[str, str] = schema_default(_VLLM_SERVE, "env")

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
