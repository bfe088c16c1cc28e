"""benchmarks/train_step.py --random-init: a random policy of a real shape, built for timing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import REPO, benchmark_module
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from routerr1.train import load_policy, random_policy

train_step = benchmark_module("train_step")

TEXT = "Which model should answer: who painted the Mona Lisa? <search>Qwen2.5-7B</search>"


def build(smollm2_dir: Path, out: Path, seed: int = 0) -> Path:
    return random_policy(train_step.shape_file("tiny-qwen2"), smollm2_dir, out, seed=seed)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def test_tiny_shape_builds_a_loadable_policy_with_the_tokenizer(smollm2_dir, tmp_path):
    out = build(smollm2_dir, tmp_path / "policy")
    shape = json.loads((REPO / "benchmarks" / "shapes" / "tiny-qwen2.json").read_text())

    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert len(model.model.layers) == shape["num_hidden_layers"] == 2
    assert model.config.hidden_size == model.model.embed_tokens.weight.shape[1] == 64
    assert model.lm_head.weight.shape[0] == shape["vocab_size"]
    assert model.dtype == torch.float32  # what the benchmark's train_router loads
    # the benchmark's parameter count (for the floor column) is the random model's
    assert train_step._count_params(str(out)) == sum(p.numel() for p in model.parameters())

    original = AutoTokenizer.from_pretrained(smollm2_dir)
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok(TEXT).input_ids
    assert ids == original(TEXT).input_ids
    assert tok.decode(ids) == TEXT
    assert tok.chat_template == original.chat_template  # the router prompt is a chat
    # special ids are the tokenizer's, valid rows of the embedding
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        assert getattr(model.config, key) == getattr(original, key) is not None
        assert getattr(model.generation_config, key) == getattr(original, key)
        assert getattr(model.config, key) < len(tok)

    # what train_router does with it: load_policy, then a forward pass over real token ids
    policy, _ = load_policy(out, "float32")
    with torch.no_grad():
        logits = policy(torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), shape["vocab_size"])
    assert torch.isfinite(logits).all()


def test_the_seed_makes_the_weights_reproducible(smollm2_dir, tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = weights(build(smollm2_dir, tmp_path / "a", seed=0))
    assert torch.equal(torch.rand(3), expected)  # the caller's random stream is left alone
    b = weights(build(smollm2_dir, tmp_path / "b", seed=0))
    c = weights(build(smollm2_dir, tmp_path / "c", seed=1))
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for key in ("model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight"):
        assert not torch.equal(a[key], c[key]), key


def test_a_vocab_smaller_than_the_tokenizer_is_refused(smollm2_dir, tmp_path):
    shape = json.loads(train_step.shape_file("tiny-qwen2").read_text())
    with pytest.raises(ValueError, match=r"vocab_size 1000 .*\(49152 tokens\)"):
        random_policy({**shape, "vocab_size": 1000}, smollm2_dir, tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_shapes_resolve_by_name_path_or_folder_and_qwen_3b_is_the_real_size(tmp_path):
    named = train_step.shape_file("qwen2.5-3b")
    assert named == REPO / "benchmarks" / "shapes" / "qwen2.5-3b.json"
    assert train_step.shape_file("qwen2.5-3b.json") == named
    folder = tmp_path / "hub"
    folder.mkdir()
    shutil.copy(named, folder / "config.json")
    assert train_step.shape_file(str(folder)) == folder / "config.json"
    assert train_step.shape_file(str(folder / "config.json")) == folder / "config.json"
    with pytest.raises(SystemExit, match="tiny-qwen2"):
        train_step.shape_file("no-such-shape")
    # Qwen2.5-3B's model card: 3.09B parameters, 2.77B without the (tied) embeddings
    params = train_step._count_params(str(folder))
    assert params == 3_085_938_688
    shape = json.loads(named.read_text())
    assert params - shape["vocab_size"] * shape["hidden_size"] == 2_774_773_760
