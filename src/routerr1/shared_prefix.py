"""Score GRPO completions with the prompt computed once per group.

TRL's GRPOTrainer forwards every row as prompt + completion, so a group of G generations runs the
same router prompt G times, in the forward and again in the backward. Here each distinct prompt
runs once with gradients; its key/value cache is indexed out to the rows that share it and the
completions attend to it. Positions and masks are the ones TRL uses, so log-probs match the plain
forward (up to float rounding) and gradients flow into the prompt computation from every row.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache


def distinct_prompts(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor):
    """Rows with equal ids *and* mask share a prompt (the pad id can also be a real token)."""
    key = torch.cat([prompt_ids, prompt_mask.to(prompt_ids.dtype)], dim=1)
    _, inverse = torch.unique(key, dim=0, return_inverse=True)
    # one representative row per distinct prompt, in first-seen order
    first = torch.full((int(inverse.max()) + 1,), key.size(0), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(key.size(0)), reduce="amin")
    return first, inverse


def shared_prefix_logps(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    logits_to_keep: int,
    compute_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs (and entropies) of the last ``logits_to_keep`` tokens of each row.

    ``model`` must carry TRL's fused LM head (``add_fused_lm_head``), as GRPOTrainer's models do.
    The prompt is every column before the completion; its last column (always a real token under
    left padding) moves to the suffix so the first completion token is scored from the suffix pass.
    """
    n_cols = input_ids.size(1)
    split = n_cols - logits_to_keep - 1
    if split < 1:
        raise ValueError(f"logits_to_keep: {logits_to_keep} leaves no shared prompt to reuse")
    # TRL pads completions to the longest in the whole generation batch; columns past this
    # micro-batch's last real token are padding in every row, so they are not computed
    real = attention_mask[:, split:].any(dim=0).nonzero()
    width = int(real.max()) + 1 if real.numel() else 1
    input_ids, attention_mask = input_ids[:, : split + width], attention_mask[:, : split + width]
    first, inverse = distinct_prompts(input_ids[:, :split], attention_mask[:, :split])
    prefix = model(
        input_ids=input_ids[first, :split],
        attention_mask=attention_mask[first, :split],
        use_cache=True,
        logits_to_keep=1,  # only the cache is needed; skip the vocabulary projection
    )
    cache = prefix.past_key_values
    if not isinstance(cache, DynamicCache):
        raise TypeError(f"expected a DynamicCache from the prefix pass, got {type(cache).__name__}")
    cache.batch_select_indices(inverse)  # differentiable gather: gradients sum over the group
    suffix = input_ids[:, split:]
    # shifted labels: suffix position j predicts column split + j + 1; the last has no target
    targets = input_ids[:, split + 1 :].masked_fill(attention_mask[:, split + 1 :] == 0, -100)
    shift_labels = torch.cat([targets, torch.full_like(targets[:, :1], -100)], dim=1)
    out = model(
        input_ids=suffix,
        attention_mask=attention_mask,
        past_key_values=cache,
        shift_labels=shift_labels,
        fused_lm_head=True,
    )
    logps = _pad_columns(out.log_probs[:, :logits_to_keep], logits_to_keep)
    entropy = (
        _pad_columns(out.entropy[:, :logits_to_keep], logits_to_keep) if compute_entropy else None
    )
    return logps, entropy


def _pad_columns(values: torch.Tensor, width: int) -> torch.Tensor:
    """Right-pad with zeros (the value TRL's fused head gives ignored positions) to ``width``."""
    missing = width - values.size(1)
    return torch.nn.functional.pad(values, (0, missing)) if missing > 0 else values


def group_shuffle(batch: dict, generator: torch.Generator | None = None) -> dict:
    """Shuffle a generation batch by whole prompt groups, in unison over every sequence value.

    TRL shuffles rows before splitting a generation batch into micro-batches, which scatters
    each group: 8 random rows of 8 groups of 4 hold 5.6 distinct prompts on average, so the
    shared prefix saves little. Here the groups' order is random and each group's rows stay
    together. Within one optimizer step the order does not change the gradient; when a
    generation batch feeds several optimizer steps, each step gets whole groups.
    """
    ids, mask = batch["prompt_ids"], batch["prompt_mask"]
    first, inverse = distinct_prompts(ids, mask)
    group_order = torch.randperm(first.numel(), generator=generator)
    rank = torch.empty_like(group_order)
    rank[group_order] = torch.arange(group_order.numel())
    # stable sort by the group's random rank keeps rows of a group in their original order
    permutation = torch.sort(rank[inverse], stable=True).indices

    def permute(v):
        if v is None or (isinstance(v, torch.Tensor) and v.ndim == 0):
            return v
        if isinstance(v, torch.Tensor):
            return v[permutation]
        return [v[i] for i in permutation]

    return {key: permute(val) for key, val in batch.items()}


def shared_prefix_trainer(base: type) -> type:
    """A GRPOTrainer subclass whose log-prob pass shares each group's prompt.

    Built lazily so importing this module does not import TRL. Multimodal and MoE batches go
    through TRL's own pass unchanged.
    """

    class SharedPrefixGRPOTrainer(base):
        def _prepare_inputs(self, generation_batch):
            # TRL calls this module-level shuffle between generating and splitting the batch
            import trl.trainer.grpo_trainer as grpo_module

            row_shuffle = grpo_module.shuffle_sequence_dict
            grpo_module.shuffle_sequence_dict = group_shuffle
            try:
                return super()._prepare_inputs(generation_batch)
            finally:
                grpo_module.shuffle_sequence_dict = row_shuffle

        def _get_per_token_logps_and_entropies(
            self,
            model,
            input_ids,
            attention_mask,
            logits_to_keep,
            batch_size=None,
            compute_entropy=False,
            compute_aux_loss=False,
            **extra,
        ):
            if (
                compute_aux_loss
                or any(v is not None for v in extra.values())
                or input_ids.size(1) - logits_to_keep < 2
            ):
                return super()._get_per_token_logps_and_entropies(
                    model,
                    input_ids,
                    attention_mask,
                    logits_to_keep,
                    batch_size=batch_size,
                    compute_entropy=compute_entropy,
                    compute_aux_loss=compute_aux_loss,
                    **extra,
                )
            batch_size = batch_size or input_ids.size(0)
            logps, entropies = [], []
            for start in range(0, input_ids.size(0), batch_size):
                rows = slice(start, start + batch_size)
                with self.accelerator.autocast():
                    lp, ent = shared_prefix_logps(
                        model,
                        input_ids[rows],
                        attention_mask[rows],
                        logits_to_keep,
                        compute_entropy,
                    )
                logps.append(lp)
                entropies.append(ent)
            entropy = torch.cat(entropies) if compute_entropy else None
            return torch.cat(logps), entropy, None

    return SharedPrefixGRPOTrainer
