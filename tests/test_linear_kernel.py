"""`linear_kernel`: fp32 inference through oneDNN-prepacked linear layers, where it pays.

The hardware probe is replaced at its boundary (``routerr1.precision.probe``); the packed layers
run the real oneDNN kernels of this torch.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_llama
from torch import nn

from routerr1 import precision
from routerr1.config import ConfigError, validate_config
from routerr1.packed_linear import PackedLinear, pack_linears, packed_linears
from routerr1.precision import Hardware, resolve_config, resolve_linear_kernel

REPO = Path(__file__).resolve().parents[1]

AMD_AVX2 = Hardware("AMD EPYC", "AVX2", frozenset({"avx2"}), cpu_vendor="AuthenticAMD")
INTEL_AMX = Hardware("Intel Xeon", "AVX512", frozenset({"amx_bf16"}), cpu_vendor="GenuineIntel")
ARM = Hardware("Neoverse", "DEFAULT", frozenset(), cpu_vendor="")

pytestmark = pytest.mark.skipif(
    not precision.resolve_linear_kernel("onednn", "float32", "cpu").value == "onednn",
    reason="this torch has no oneDNN linear kernels",
)


@pytest.fixture()
def machine(monkeypatch):
    def use(hw: Hardware) -> None:
        monkeypatch.setattr(precision, "probe", lambda: hw)

    return use


@pytest.mark.parametrize(
    ("hw", "dtype", "device", "expected"),
    [
        (AMD_AVX2, "float32", "cpu", "onednn"),
        (INTEL_AMX, "float32", "cpu", "default"),  # MKL is Intel's own
        (ARM, "float32", "cpu", "default"),  # not measured there
        (AMD_AVX2, "bfloat16", "cpu", "default"),  # bf16 goes through oneDNN already
        (replace(AMD_AVX2, cuda_name="H100", cuda_bf16=True), "float32", "cuda", "default"),
    ],
)
def test_auto_packs_only_fp32_on_amd_cpus(hw, dtype, device, expected):
    resolved = resolve_linear_kernel("auto", dtype, device, hw)
    assert resolved.value == expected
    assert resolved.reason.startswith("auto")


def test_an_explicit_value_wins_and_unknown_ones_are_refused():
    assert resolve_linear_kernel("onednn", "float32", "cpu", INTEL_AMX).value == "onednn"
    assert resolve_linear_kernel("default", "float32", "cpu", AMD_AVX2).value == "default"
    with pytest.raises(ValueError, match="linear_kernel: 'mkl'"):
        resolve_linear_kernel("mkl", "float32", "cpu", AMD_AVX2)
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    raw["linear_kernel"] = "fast"
    with pytest.raises(ConfigError, match="linear_kernel"):
        validate_config(raw)


def test_check_config_and_mlflow_params_carry_the_kernel(machine, capsys):
    from routerr1.cli import main

    machine(AMD_AVX2)
    assert main(["check-config", str(REPO / "config" / "config.yaml")]) == 0
    out = capsys.readouterr().out
    assert "pool Qwen2.5-Coder-1.5B linear_kernel: onednn (auto: AMD CPU" in out
    assert "policy rollouts linear_kernel: onednn (auto: AMD CPU" in out
    machine(INTEL_AMX)  # bf16 pool and rollouts there: nothing to pack
    cfg = validate_config(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    params = precision.resolved_params(cfg)
    assert params["precision.pool.Qwen2.5-Coder-1.5B.linear_kernel"] == "default"
    assert params["precision.policy.rollouts.linear_kernel"] == "default"
    assert {r.value for k, r in resolve_config(cfg).items() if "linear_kernel" in k} == {"default"}


@pytest.mark.parametrize("bias", [True, False])
def test_a_packed_layer_computes_what_the_linear_layer_does(bias):
    torch.manual_seed(0)
    linear = nn.Linear(96, 200, bias=bias)
    packed = PackedLinear(linear)
    for shape in [(1, 96), (3, 96), (2, 5, 96)]:
        x = torch.randn(*shape)
        torch.testing.assert_close(packed(x), linear(x), rtol=1e-5, atol=1e-5)


def test_packing_a_model_keeps_its_greedy_tokens_and_its_tied_embedding():
    model = tiny_llama(vocab_size=64, tie_word_embeddings=True).eval()
    ids = torch.randint(0, 64, (3, 7))
    expected = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=0)
    embedding = model.get_input_embeddings().weight.clone()
    assert pack_linears(model) == 2 * 7 + 1  # q k v o gate up down per layer, and lm_head
    assert isinstance(model.lm_head, PackedLinear)
    got = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(got, expected)
    assert torch.equal(model.get_input_embeddings().weight, embedding)


def test_a_policy_is_packed_with_its_current_weights_and_restored_for_training():
    model = tiny_llama(vocab_size=64).eval()
    x = torch.randint(0, 64, (2, 5))
    linears = [m for m in model.modules() if type(m) is nn.Linear]
    with packed_linears(model) as n:
        assert n == len(linears) and not any(type(m) is nn.Linear for m in model.modules())
        before = model(x).logits
    assert [m for m in model.modules() if type(m) is nn.Linear] == linears  # the same objects
    assert all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        model.lm_head.weight.mul_(2)  # an optimizer step between two rollouts
    with packed_linears(model):
        after = model(x).logits
    torch.testing.assert_close(after, model(x).logits, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(after, before)
    with packed_linears(model, enabled=False) as n:
        assert n == 0 and isinstance(model.lm_head, nn.Linear)


def test_adapter_models_are_left_alone():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(vocab_size=64), LoraConfig(r=2, target_modules=["q_proj"]))
    with packed_linears(model) as n:
        assert n == 0
    assert pack_linears(model) == 0


def test_the_pool_answers_the_same_through_packed_layers(smollm2_dir):
    from routerr1.pool.local import LocalModel, load_weights

    questions = ["What is the capital of France?", "Who wrote Hamlet?", "2 plus 2?"]
    answers = {}
    for kernel in ("default", "onednn"):
        weights = load_weights(smollm2_dir, "float32", kernel)
        assert isinstance(weights.model.lm_head, PackedLinear) == (kernel == "onednn")
        model = LocalModel(smollm2_dir, dtype="float32", weights=weights, chat_examples=True)
        answers[kernel] = [g.text for g in model.answer(questions, max_new_tokens=8)]
    assert answers["onednn"] == answers["default"]
    assert all(answers["default"])


def test_policy_rollouts_are_the_same_through_packed_layers(smollm2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from routerr1.config import PoolEntry, RolloutConfig
    from routerr1.pool.base import build_pool
    from routerr1.rollout import RolloutEngine

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir).eval()
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    entry = PoolEntry("SmolLM2-Cheap", "smol", 0.02, 0.04, max_new_tokens=8)
    pool = build_pool([entry], {"smol": smollm2_dir}, linear_kernel="default")
    cfg = RolloutConfig(max_turns=1, max_turn_tokens=24, max_final_tokens=8, info_max_tokens=12)
    prompt = "<think>check</think>\n<search>SmolLM2-Cheap: capital of France?</search>\n" * 4
    texts = {}
    for kernel in ("default", "onednn"):
        engine = RolloutEngine(tok, pool, cfg, linear_kernel=kernel)
        texts[kernel] = [t.text for t in engine.run(model, [prompt, prompt[:-40]], greedy=True)]
        assert isinstance(model.lm_head, nn.Linear)  # put back after the run
    assert texts["onednn"] == texts["default"]
    assert all(texts["default"])


def test_the_benchmark_names_its_machine_and_times_each_shape(capsys, monkeypatch):
    import sys

    from conftest import benchmark_module

    bench = benchmark_module("linear_kernels")
    monkeypatch.setattr(bench, "SHAPES", {"tiny": (8, 16)})
    monkeypatch.setattr(sys, "argv", ["linear_kernels.py", "--skip-answers", "--rows", "1", "4"])
    bench.main()
    out = capsys.readouterr().out
    assert out.startswith("CPU: ") and "linear_kernel auto (fp32)" in out
    assert out.count("| tiny (8 → 16) |") == 2
