"""The warm start's shared-prefix SFT must equal TRL's per-row SFT: loss, gradients, weights."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from conftest import tiny_llama
from transformers import AutoTokenizer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling
from trl.trainer.utils import add_fused_lm_head

from routerr1.config import PoolEntry, RolloutConfig, WarmStartConfig
from routerr1.data import QARecord
from routerr1.prompt import Descriptor
from routerr1.shared_prefix import common_prefix_length, shared_prefix_sft_forward
from routerr1.warmstart import build_examples, warm_start

ENTRIES = [
    PoolEntry("Tiny", "t", 0.01, 0.02),
    PoolEntry("Mid", "m", 0.05, 0.10),
    PoolEntry("Big", "b", 0.10, 0.20),
]
DESCS = [Descriptor(e.name, "", e.price_in, e.price_out, 0.1, 5.0, 7.0) for e in ENTRIES]
QUESTIONS = [
    ("who wrote hamlet", "Shakespeare"),
    ("what is the capital of peru", "Lima"),
    ("largest planet in the solar system", "Jupiter"),
    ("who is the author of the novel 1984", "George Orwell"),
]


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(scope="module")
def rows(tokenizer):
    """Real warm-start rows: the router prompt, a question, policy and injected segments."""
    recs = [QARecord(str(i), q, (a,), "nq", "train") for i, (q, a) in enumerate(QUESTIONS)]
    pool = pd.DataFrame(
        [
            {"model": e.name, "question": q, "prediction": f"{a} ({e.name})", "em": 1.0}
            for q, a in QUESTIONS
            for e in ENTRIES
        ]
    )
    out = build_examples(
        recs, pool, ENTRIES, DESCS, tokenizer, RolloutConfig(compressed_descriptors=True)
    )
    assert len(out) == len(QUESTIONS)
    return out


def collate(rows, pad_id: int):
    """The batch SFTTrainer builds: right-padded, labels only on completion tokens."""
    collator = DataCollatorForLanguageModeling(pad_token_id=pad_id)
    return collator(
        [
            {
                "input_ids": r["input_ids"],
                "labels": [
                    t if m else -100
                    for t, m in zip(r["input_ids"], r["completion_mask"], strict=True)
                ],
            }
            for r in rows
        ]
    )


def test_common_prefix_stops_at_a_differing_id_a_trained_target_or_padding():
    ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 7, 3, 9]])
    mask = torch.ones_like(ids)
    untrained = torch.full_like(ids, -100)
    assert common_prefix_length(ids, mask, untrained) == 3
    trained = untrained.clone()
    trained[1, 2] = 7  # position 1 predicts a trained token, so only column 0 is shared
    assert common_prefix_length(ids, mask, trained) == 1
    padded = mask.clone()
    padded[0, 1:] = 0
    assert common_prefix_length(ids, padded, untrained) == 1
    same = torch.tensor([[5, 6, 7], [5, 6, 7]])
    assert common_prefix_length(same, torch.ones_like(same), torch.full_like(same, -100)) == 2
    other = torch.tensor([[5, 6, 7], [4, 6, 7]])
    assert common_prefix_length(other, torch.ones_like(other), torch.full_like(other, -100)) == 0


def test_no_shared_prefix_or_a_single_row_falls_back_to_the_plain_forward():
    model = tiny_llama(61)
    add_fused_lm_head(model, outputs=("log_probs",))
    ids = torch.tensor([[5, 6, 7], [4, 6, 7]])
    mask, labels = torch.ones_like(ids), ids.clone()
    assert shared_prefix_sft_forward(model, ids, mask, labels) is None
    assert shared_prefix_sft_forward(model, ids[:1], mask[:1], labels[:1]) is None


def test_warm_start_rows_share_the_router_prompt_up_to_the_question(rows, tokenizer):
    batch = collate(rows, tokenizer.pad_token_id or 0)
    split = common_prefix_length(batch["input_ids"], batch["attention_mask"], batch["labels"])
    prompt_lens = [r["completion_mask"].index(1) for r in rows]
    assert 200 < split < min(prompt_lens)  # the descriptors and instructions, not the questions
    for row, end in zip(rows, prompt_lens, strict=True):
        assert row["question"] in tokenizer.decode(row["input_ids"][split:end])


def test_loss_and_every_gradient_match_the_per_row_forward(rows, tokenizer):
    batch = collate(rows, tokenizer.pad_token_id or 0)
    model = tiny_llama(len(tokenizer))
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))

    def run(forward):
        model.zero_grad()
        out = forward()
        loss = -out.log_probs.sum() / out.label_mask.sum()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        return loss.detach(), out, grads

    ref_loss, ref, ref_grads = run(lambda: model(**batch, fused_lm_head=True))
    loss, out, grads = run(
        lambda: shared_prefix_sft_forward(
            model, batch["input_ids"], batch["attention_mask"], batch["labels"]
        )
    )
    assert out is not None and out.log_probs.shape == ref.log_probs.shape
    assert torch.equal(out.label_mask, ref.label_mask)
    assert torch.equal(out.is_top1, ref.is_top1)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.log_probs, ref.log_probs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.entropy, ref.entropy, rtol=1e-5, atol=1e-5)
    assert ref_grads.keys() == grads.keys()
    for name, g in ref_grads.items():
        torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-6, msg=name)
    # the prefix's own layers receive gradient through attention, not only the suffix's tokens
    prefix_token = int(batch["input_ids"][0, 3])
    assert grads["model.embed_tokens.weight"][prefix_token].abs().sum() > 0


@pytest.mark.parametrize("lora_r", [0, 4])
def test_warm_start_with_the_prefix_shared_gives_the_same_weights(
    rows, tokenizer, tmp_path, lora_r
):
    from transformers import AutoModelForCausalLM

    base = tmp_path / "base"
    tiny_llama(len(tokenizer)).save_pretrained(base)
    tokenizer.save_pretrained(base)
    weights, infos = {}, {}
    for share in (False, True):
        out = tmp_path / f"warm-{share}"
        cfg = WarmStartConfig(
            epochs=1, batch_size=len(rows), learning_rate=1e-3, share_prompt_prefix=share
        )
        infos[share] = warm_start(base, rows, out, cfg, lora_r=lora_r)
        weights[share] = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert infos[True]["steps"] == infos[False]["steps"] == 1
    assert infos[True]["shared_prefix_batches"] == 1
    assert infos[False]["shared_prefix_batches"] == 0
    assert infos[True]["first_loss"] == pytest.approx(infos[False]["first_loss"], rel=1e-5)
    start = AutoModelForCausalLM.from_pretrained(base).state_dict()
    name = "model.layers.0.self_attn.q_proj.weight"
    assert (weights[True][name] - start[name]).abs().max() > 1e-4  # the step moved the weights
    for key, value in weights[False].items():
        torch.testing.assert_close(weights[True][key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_gradient_checkpointing_turns_sharing_off(rows, tokenizer, tmp_path, caplog):
    base = tmp_path / "base"
    tiny_llama(len(tokenizer)).save_pretrained(base)
    tokenizer.save_pretrained(base)
    cfg = WarmStartConfig(epochs=1, batch_size=len(rows), share_prompt_prefix=True)
    info = warm_start(base, rows, tmp_path / "warm", cfg, gradient_checkpointing=True)
    assert info["shared_prefix_batches"] == 0
    assert "share_prompt_prefix is off" in caplog.text
