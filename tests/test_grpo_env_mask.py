"""One real TRL GRPOTrainer step through our wiring: injected tokens get no gradient.

`train_router` builds the trainer (plain, or the shared-prefix subclass) with our
`rollout_func`, which returns `env_mask` (1 = the policy wrote the token, 0 = injected from the
pool). The rollout here is scripted, so every row has a known `<information>` block, and each
group holds one right and one wrong answer, so every row has a non-zero advantage: a policy
token's log-prob must get a non-zero gradient from the loss, and an injected token's would get
the same non-zero gradient unless the loss drops it. If TRL ignored or renamed `env_mask`, the
injected tokens would be trained on and the test fails.

The policy is a randomly initialised two-layer Llama over a byte-level vocabulary built here,
so the test needs no download.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from conftest import tiny_llama

from routerr1.config import RolloutConfig, TrainConfig
from routerr1.data import QARecord
from routerr1.pool.base import PoolCall
from routerr1.prompt import Descriptor
from routerr1.rollout import Trajectory

POOL_NAME = "Oracle"
TURNS = (  # (text, env_mask): think + search, the injected observation, think + answer
    ("<think>ask</think>\n<search>Oracle: capital of France?</search>", 1),
    ("\n<information>Paris, on the Seine</information>\n", 0),
    ("<think>ok</think>\n<answer>{answer}</answer>", 1),
)


def byte_tokenizer():
    """Byte-level tokens, no merges: every string round-trips exactly, 258 ids in all."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(["<pad>", "</s>"])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>")


class ScriptedEngine:
    """Stands in for RolloutEngine: the k-th sample of a prompt answers right when k is even."""

    def __init__(self, tokenizer, pool, cfg, **_):
        self.tok, self.pool = tokenizer, pool
        self.run_log: list[dict] = []
        self.seen: Counter[str] = Counter()

    def run(self, model, prompts, greedy=False):
        trajs = []
        for prompt in prompts:
            answer = "Paris" if self.seen[prompt] % 2 == 0 else "Rome"
            self.seen[prompt] += 1
            traj = Trajectory(prompt_ids=self.tok(prompt, add_special_tokens=False).input_ids)
            for text, mask in TURNS:
                ids = self.tok(text.format(answer=answer), add_special_tokens=False).input_ids
                traj.completion_ids += ids
                traj.env_mask += [mask] * len(ids)
            traj.injected = 1
            traj.calls = [PoolCall(POOL_NAME, "capital of France?", "Paris", 40, 5, 1e-5, 0.1)]
            traj.text = self.tok.decode(traj.completion_ids)
            trajs.append(traj)
        self.last = trajs
        return trajs


class StubPool:
    names = [POOL_NAME]
    aliases = {POOL_NAME: []}
    entries: dict = {}


@pytest.mark.parametrize("shared", [False, True], ids=["plain", "shared_prefix"])
def test_injected_tokens_get_no_gradient_through_the_grpo_loss(tmp_path, monkeypatch, shared):
    import routerr1.train as train_module

    tok = byte_tokenizer()
    model = tiny_llama(len(tok), pad_token_id=0, eos_token_id=1, bos_token_id=1)
    captured = []  # (per-token targets, log-probs whose .grad the backward fills)

    def keep_scored_log_probs(module, args, kwargs, output):
        # TRL's fused head returns per-token log-probs; only the training pass needs gradients
        log_probs = getattr(output, "log_probs", None)
        if not kwargs.get("fused_lm_head") or log_probs is None or not log_probs.requires_grad:
            return
        # shift_labels (shared prefix) are aligned with log_probs; labels (TRL) are shifted
        shift = kwargs.get("shift_labels")
        targets = shift if shift is not None else kwargs["labels"][:, 1:]
        log_probs.retain_grad()
        captured.append((targets.detach().clone(), log_probs))

    model.register_forward_hook(keep_scored_log_probs, with_kwargs=True)
    engines = []

    def scripted_engine(*args, **kwargs):
        engines.append(ScriptedEngine(*args, **kwargs))
        return engines[-1]

    monkeypatch.setattr(train_module, "load_policy", lambda path, dtype: (model, tok))
    monkeypatch.setattr(train_module, "RolloutEngine", scripted_engine)
    records = [
        QARecord(str(i), q, ("Paris",), "nq", "train")
        for i, q in enumerate(["Capital of France?", "Which city is France's capital?"])
    ]
    summary = train_module.train_router(
        policy_dir=tmp_path / "unused",
        policy_dtype="float32",
        records=records,
        descriptors=[Descriptor(POOL_NAME, "knows capitals", 0.1, 0.2, 0.1, 50.0, 60.0)],
        pool=StubPool(),
        alpha=0.0,
        train_cfg=TrainConfig(
            max_steps=1,
            prompts_per_step=2,
            num_generations=2,
            micro_batch_size=4,
            beta=0.0,
            save_steps=100,
            share_prompt_prefix=shared,
        ),
        rollout_cfg=RolloutConfig(max_turns=1, max_total_tokens=256, max_final_tokens=8),
        checkpoint_dir=tmp_path / "ckpt",
        model_out=tmp_path / "model",
        mlflow_active=False,
    )
    # every trajectory passed the format gate: one right, one wrong answer per group
    assert summary["history"][0]["reward"] == pytest.approx(0.5)

    masks = {tuple(t.completion_ids): t.env_mask for t in engines[0].last}
    rows = 0
    for targets, log_probs in captured:
        assert log_probs.grad is not None, "the GRPO loss did not reach the policy's log-probs"
        for r in range(targets.size(0)):
            scored = (targets[r] != -100).nonzero().squeeze(1)
            ids = tuple(targets[r, scored].tolist())
            assert ids in masks, "a scored row is not one of the rollout's completions"
            env = torch.tensor(masks[ids], dtype=torch.bool)
            grad = log_probs.grad[r, scored]
            assert (~env).sum() > 0 and env.sum() > 0
            assert torch.all(grad[~env] == 0), "injected (env_mask=0) tokens were trained on"
            assert torch.all(grad[env] != 0), "policy tokens got no gradient"
            rows += 1
    assert rows == 4  # 2 prompts x 2 generations, each scored once with gradients
