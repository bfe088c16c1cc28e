"""The shared-prefix scorer must equal TRL's plain per-row scoring, in values and gradients."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_llama
from trl.trainer.utils import add_fused_lm_head

from routerr1.shared_prefix import distinct_prompts, group_shuffle, shared_prefix_logps

PAD = 0


def tiny_model(seed: int = 0):
    model = tiny_llama(61, seed, max_position_embeddings=128, pad_token_id=PAD)
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    return model


def grpo_batch(prompts: list[list[int]], completions: list[list[int]], group: int):
    """TRL's layout: prompts left-padded, completions right-padded, each prompt repeated."""
    rows_p = [p for p in prompts for _ in range(group)]
    width_p = max(map(len, rows_p))
    width_c = max(map(len, completions))
    ids, mask = [], []
    for p, c in zip(rows_p, completions, strict=True):
        ids.append([PAD] * (width_p - len(p)) + p + c + [PAD] * (width_c - len(c)))
        mask.append([0] * (width_p - len(p)) + [1] * (len(p) + len(c)) + [0] * (width_c - len(c)))
    return torch.tensor(ids), torch.tensor(mask), width_c


def reference_logps(model, ids, mask, keep):
    """TRL's own path: every row forwarded whole through the fused head."""
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :-keep] = -100
    out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    return out.log_probs[:, -keep:], out.entropy[:, -keep:]


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)

    def rand(n):
        return torch.randint(1, 61, (n,), generator=g).tolist()

    # the pad id also occurs as a real token inside one prompt
    prompts = [rand(9), rand(5) + [PAD] + rand(3), rand(12)]
    completions = [rand(n) for n in (4, 7, 1, 6, 3, 5, 2, 7, 6)]
    return grpo_batch(prompts, completions, group=3)


def test_distinct_prompts_groups_rows_by_ids_and_mask():
    ids = torch.tensor([[0, 5, 6], [0, 5, 6], [7, 5, 6], [0, 5, 6]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 1], [1, 1, 1], [0, 1, 1]])
    first, inverse = distinct_prompts(ids, mask)
    assert inverse.tolist()[0] == inverse.tolist()[3]
    assert len(set(inverse.tolist())) == 3  # same ids, different mask: different prompt
    assert sorted(first.tolist()) == [0, 1, 2]
    assert all(inverse[first[k]] == k for k in range(3))


def test_log_probs_and_entropy_match_the_plain_forward(batch):
    model = tiny_model()
    ids, mask, keep = batch
    with torch.no_grad():
        ref_lp, ref_ent = reference_logps(model, ids, mask, keep)
        lp, ent = shared_prefix_logps(model, ids, mask, keep, compute_entropy=True)
    comp_mask = mask[:, -keep:].bool()
    assert lp.shape == ref_lp.shape == (9, keep)
    torch.testing.assert_close(lp[comp_mask], ref_lp[comp_mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent[comp_mask], ref_ent[comp_mask], atol=1e-5, rtol=1e-5)
    assert (lp[~comp_mask] == 0).all()


def test_a_micro_batch_of_short_completions_skips_the_shared_padding(batch):
    """Rows whose completions all end early: TRL still pads them to the batch's longest."""
    model = tiny_model()
    ids, mask, keep = batch
    rows = torch.tensor([2, 6])  # completions of 1 and 2 tokens, padded to 7
    ids, mask = ids[rows], mask[rows]
    assert not mask[:, -3:].any()
    with torch.no_grad():
        ref_lp, ref_ent = reference_logps(model, ids, mask, keep)
        lp, ent = shared_prefix_logps(model, ids, mask, keep, compute_entropy=True)
    comp_mask = mask[:, -keep:].bool()
    assert lp.shape == ent.shape == (2, keep)
    torch.testing.assert_close(lp[comp_mask], ref_lp[comp_mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent[comp_mask], ref_ent[comp_mask], atol=1e-5, rtol=1e-5)
    assert (lp[~comp_mask] == 0).all()


def test_group_shuffle_keeps_each_group_together_and_permutes_in_unison(batch):
    ids, mask, keep = batch
    prompt_ids, prompt_mask = ids[:, :-keep], mask[:, :-keep]
    gen = {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": ids[:, -keep:],
        "row": list(range(ids.size(0))),
        "num_items_in_batch": torch.tensor(42),
        "absent": None,
    }
    orders = set()
    for seed in range(8):
        out = group_shuffle(gen, torch.Generator().manual_seed(seed))
        rows = out["row"]
        assert sorted(rows) == list(range(ids.size(0)))
        torch.testing.assert_close(out["prompt_ids"], prompt_ids[rows])
        torch.testing.assert_close(out["completion_ids"], ids[rows, -keep:])
        assert out["num_items_in_batch"].item() == 42 and out["absent"] is None
        groups = [r // 3 for r in rows]  # the fixture repeats each of 3 prompts 3 times
        assert groups == [g for g in dict.fromkeys(groups) for _ in range(3)]
        assert all(
            rows[i] < rows[i + 1] for i in range(len(rows) - 1) if groups[i] == groups[i + 1]
        )
        orders.add(tuple(dict.fromkeys(groups)))
    assert len(orders) > 1  # the groups' order is random


def test_gradients_match_the_plain_forward(batch):
    ids, mask, keep = batch
    comp_mask = mask[:, -keep:].float()
    grads = []
    for shared in (False, True):
        model = tiny_model()
        if shared:
            lp, _ = shared_prefix_logps(model, ids, mask, keep)
        else:
            lp, _ = reference_logps(model, ids, mask, keep)
        # an advantage-weighted loss, as in GRPO, so rows pull in different directions
        weights = torch.linspace(-1.0, 1.0, ids.size(0)).unsqueeze(1)
        (lp * comp_mask * weights).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, atol=1e-5, rtol=1e-4, msg=name)
    assert any(g.abs().sum() > 0 for g in grads[1].values())


def test_no_prompt_left_is_a_clear_error():
    model = tiny_model()
    ids = torch.tensor([[3, 4, 5]])
    with pytest.raises(ValueError, match="logits_to_keep"):
        shared_prefix_logps(model, ids, torch.ones_like(ids), logits_to_keep=2)


@pytest.mark.slow
@pytest.mark.parametrize("micro_batch", [6, 3])
def test_grpo_step_with_shared_prefix_matches_trl_plain_step(smollm2_dir, tmp_path, micro_batch):
    """One real GRPOTrainer step each way, same seed: same rollouts, same loss and grad norm.

    With micro-batches of 3, TRL's row shuffle mixes the two groups while the shared-prefix
    trainer's group shuffle keeps them apart: one optimizer step must not see the difference.
    """
    from routerr1.config import PoolEntry, RolloutConfig, TrainConfig
    from routerr1.data import QARecord
    from routerr1.pool.base import local_pool
    from routerr1.prompt import Descriptor
    from routerr1.train import train_router

    pool = local_pool(
        [PoolEntry("Smol", "smol", 0.1, 0.2, max_new_tokens=6)], {"smol": smollm2_dir}
    )
    records = [
        QARecord(str(i), q, (a,), "nq", "train")
        for i, (q, a) in enumerate([("Capital of France?", "Paris"), ("2 + 2?", "4")])
    ]
    desc = [Descriptor("Smol", "tiny", 0.1, 0.2, 0.1, 10.0, 12.0)]
    rollout = RolloutConfig(
        max_turns=1, max_turn_tokens=12, max_final_tokens=8, max_total_tokens=48
    )
    logs = {}
    for shared in (False, True):
        cfg = TrainConfig(
            max_steps=1,
            prompts_per_step=2,
            num_generations=3,
            micro_batch_size=micro_batch,
            beta=0.0,
            save_steps=100,
            share_prompt_prefix=shared,
        )
        summary = train_router(
            policy_dir=smollm2_dir,
            policy_dtype="float32",
            records=records,
            descriptors=desc,
            pool=pool,
            alpha=0.5,
            train_cfg=cfg,
            rollout_cfg=rollout,
            checkpoint_dir=tmp_path / f"ckpt{shared}",
            model_out=tmp_path / f"model{shared}",
            mlflow_active=False,
        )
        logs[shared] = summary["history"][0]
    plain, shared = logs[False], logs[True]
    assert plain["reward"] == shared["reward"]  # identical rollouts
    assert shared["grad_norm"] == pytest.approx(plain["grad_norm"], rel=1e-3, abs=1e-6)
    assert shared["loss"] == pytest.approx(plain["loss"], rel=1e-3, abs=1e-6)
