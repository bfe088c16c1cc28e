"""`auto` precision: bf16 only where the hardware runs it natively, resolved at run time.

The hardware probe is replaced at its boundary (``routerr1.precision.probe``) by machines of
each kind; everything above it is the real code.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import mlflow
import pytest
import yaml

from routerr1 import precision
from routerr1.config import ConfigError, PoolEntry, train_config, validate_config
from routerr1.pool.cache import call_key
from routerr1.precision import (
    Hardware,
    resolve_config,
    resolve_dtype,
    resolve_policy_dtype,
    resolve_precision,
)

REPO = Path(__file__).resolve().parents[1]

AMX = Hardware("Intel Xeon (Sapphire Rapids)", "AVX512", frozenset({"avx2", "amx_bf16"}))
AVX512_BF16 = Hardware("AMD EPYC (Zen 4)", "AVX512", frozenset({"avx2", "avx512_bf16"}))
AVX512_NO_BF16 = Hardware("Intel Xeon (Skylake)", "AVX512", frozenset({"avx2", "avx512f"}))
AVX2 = Hardware("AMD EPYC (Zen 3)", "AVX2", frozenset({"avx2", "fma"}))
# a CPU with AMX where torch was told to dispatch AVX2 kernels (ATEN_CPU_CAPABILITY=avx2)
AMX_CAPPED = Hardware("Intel Xeon (Sapphire Rapids)", "AVX2", frozenset({"amx_bf16"}))
CUDA_BF16 = replace(AVX2, cuda_name="NVIDIA H100", cuda_bf16=True)
CUDA_NO_BF16 = replace(AMX, cuda_name="Tesla V100", cuda_bf16=False)


@pytest.fixture()
def machine(monkeypatch):
    """Pretend to run on ``hw``: every resolution in the process sees it."""

    def use(hw: Hardware) -> None:
        monkeypatch.setattr(precision, "probe", lambda: hw)
        monkeypatch.setattr(precision, "bf16_slowdown", lambda: 56.0)
        precision._warned.clear()

    return use


@pytest.mark.parametrize(
    ("hw", "pool", "train"),
    [
        (AMX, "bfloat16", "bf16"),
        (AVX512_BF16, "bfloat16", "bf16"),
        (AVX512_NO_BF16, "float32", "fp32"),
        (AVX2, "float32", "fp32"),
        (AMX_CAPPED, "float32", "fp32"),
        # the pool runs on the CPU; training runs on the GPU when there is one
        (CUDA_BF16, "float32", "bf16"),
        (CUDA_NO_BF16, "bfloat16", "fp32"),
    ],
)
def test_auto_is_bf16_only_where_native(hw, pool, train):
    assert resolve_dtype("auto", "pool[X].dtype", "cpu", hw).value == pool
    assert resolve_precision("auto", hw=hw).value == train
    # master weights stay fp32 whatever the machine
    assert resolve_policy_dtype("auto", hw).value == "float32"


def test_the_reason_names_the_evidence():
    reason = resolve_dtype("auto", "k", "cpu", AVX2).reason
    assert reason == "auto: cpu capability AVX2, no native bf16"
    assert "amx_bf16" in resolve_dtype("auto", "k", "cpu", AMX).reason
    assert "H100 supports bf16" in resolve_precision("auto", hw=CUDA_BF16).reason
    assert "V100 has no bf16" in resolve_precision("auto", hw=CUDA_NO_BF16).reason


def test_an_explicit_value_wins(machine):
    machine(AMX)
    assert resolve_dtype("float32", "k", "cpu").value == "float32"
    assert resolve_precision("fp32").value == "fp32"
    assert resolve_policy_dtype("bfloat16").value == "bfloat16"
    machine(AVX2)
    assert resolve_dtype("bfloat16", "k", "cpu").value == "bfloat16"
    assert resolve_precision("bf16").value == "bf16"


def test_explicit_bf16_without_native_support_warns_once_naming_key_slowdown_and_auto(
    machine, caplog
):
    machine(AVX2)
    with caplog.at_level(logging.WARNING, logger="routerr1.precision"):
        for _ in range(3):
            resolve_dtype("bfloat16", "pool[Qwen].dtype", "cpu")
        resolve_precision("bf16")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # once per key
    assert "pool[Qwen].dtype" in warnings[0] and "56x slower" in warnings[0]
    assert "pool[Qwen].dtype: auto" in warnings[0]
    assert "train.precision" in warnings[1]
    caplog.clear()
    machine(AMX)
    resolve_dtype("bfloat16", "pool[Qwen].dtype", "cpu")
    assert not caplog.records  # native: nothing to warn about


def test_unknown_values_are_refused_naming_the_key(raw):
    with pytest.raises(ValueError, match=r"pool\[X\].dtype: 'int8'"):
        resolve_dtype("int8", "pool[X].dtype", "cpu", AMX)
    with pytest.raises(ValueError, match="train.precision: 'fp8'"):
        resolve_precision("fp8", hw=AMX)
    for mutate, needle in [
        (lambda c: c["pool"][1].__setitem__("dtype", "int8"), "pool.1.dtype"),
        (lambda c: c["train"].__setitem__("precision", "half"), "train.precision"),
        (lambda c: c["policy"].__setitem__("dtype", "fp16"), "policy.dtype"),
    ]:
        bad = yaml.safe_load(yaml.safe_dump(raw))
        mutate(bad)
        with pytest.raises(ConfigError, match=needle):
            validate_config(bad)


@pytest.fixture()
def raw() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_the_default_config_resolves_per_machine(raw, machine):
    cfg = validate_config(raw)
    assert train_config(cfg).precision == "auto"
    machine(AMX)
    amx = {k: r.value for k, r in resolve_config(cfg).items()}
    machine(AVX2)
    avx2 = {k: r.value for k, r in resolve_config(cfg).items()}
    assert amx["pool Qwen2.5-Coder-1.5B"] == "bfloat16"
    assert avx2["pool Qwen2.5-Coder-1.5B"] == "float32"
    assert amx["pool Gemma-3-270M"] == avx2["pool Gemma-3-270M"] == "float32"  # explicit
    assert (amx["train.precision"], avx2["train.precision"]) == ("bf16", "fp32")
    assert amx["policy"] == avx2["policy"] == "float32"


def test_the_old_train_bf16_key_still_reads(raw):
    raw["train"].pop("precision")
    raw["train"]["bf16"] = False
    assert train_config(validate_config(raw)).precision == "fp32"
    raw["train"]["bf16"] = True
    assert train_config(validate_config(raw)).precision == "bf16"
    raw["train"]["precision"] = "fp32"
    with pytest.raises(ConfigError, match="train.bf16: replaced by train.precision"):
        validate_config(raw)


def test_the_pool_resolves_auto_before_keying_the_cache(machine):
    from routerr1.pool.base import resolve_local_dtypes

    entry = PoolEntry(name="M", model="m", price_in=0.1, price_out=0.2)
    assert entry.dtype == "auto"
    machine(AMX)
    (on_amx,) = resolve_local_dtypes([entry])
    machine(AVX2)
    (on_avx2,) = resolve_local_dtypes([entry])
    assert (on_amx.dtype, on_avx2.dtype) == ("bfloat16", "float32")
    # a replay never mixes dtypes: each precision has its own cache entries
    assert call_key(on_amx, "q", 8) != call_key(on_avx2, "q", 8)
    # endpoints choose their own precision; their entries are left alone
    served = replace(entry, backend="openai", base_url="http://127.0.0.1:1/v1")
    assert resolve_local_dtypes([served])[0].dtype == "auto"


def test_check_config_prints_what_auto_resolves_to(machine, capsys):
    from routerr1.cli import main

    machine(AVX2)
    assert main(["check-config", str(REPO / "config" / "config.yaml")]) == 0
    out = capsys.readouterr().out
    assert "pool Qwen2.5-Coder-1.5B: float32 (auto: cpu capability AVX2, no native bf16)" in out
    assert "train.precision: fp32 (auto: cpu capability AVX2, no native bf16)" in out
    assert "policy: float32" in out
    machine(AMX)
    assert main(["check-config", str(REPO / "config" / "config.yaml")]) == 0
    assert "pool Qwen2.5-Coder-1.5B: bfloat16 (auto:" in capsys.readouterr().out


def test_mlflow_runs_record_the_resolved_precision(tmp_path, machine):
    from routerr1.tracking import tracked_run

    cfg = {
        "mlflow": {"experiment": "p"},
        "pool": [{"name": "Q", "model": "q", "dtype": "auto"}],
        "policy": {"model": "q", "dtype": "auto"},
        "train": {"precision": "auto"},
    }
    machine(AVX2)
    with tracked_run(cfg, "k", "k", results_dir=tmp_path) as run:
        on_avx2 = run.info.run_id
    params = mlflow.get_run(on_avx2).data.params
    assert params["precision.pool.Q"] == "float32"
    assert params["precision.train.precision"] == "fp32"
    assert "AVX2" in mlflow.get_run(on_avx2).data.tags["routerr1.hardware"]
    # an unfinished run is not resumed on a machine that resolves differently
    with pytest.raises(RuntimeError):
        with tracked_run(cfg, "j", "j", results_dir=tmp_path) as run:
            killed = run.info.run_id
            raise RuntimeError("killed")
    machine(AMX)
    with tracked_run(cfg, "j", "j", results_dir=tmp_path) as run:
        assert run.info.run_id != killed
        assert mlflow.get_run(run.info.run_id).data.params["precision.pool.Q"] == "bfloat16"


def test_the_probe_reads_this_machine():
    hw = precision.probe()
    assert hw.cpu_model and hw.cpu_capability
    assert "torch cpu capability" in hw.describe()
    assert precision.matmul_gflops("float32", size=64, seconds=0.01) > 0
