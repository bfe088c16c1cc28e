"""Score GRPO completions with the prompt computed once per group.

TRL's GRPOTrainer forwards every row as prompt + completion, so a group of G generations runs the
same router prompt G times, in the forward and again in the backward. Here each distinct prompt
runs once with gradients; its key/value cache is indexed out to the rows that share it and the
completions attend to it. Positions and masks are the ones TRL uses, so log-probs match the plain
forward (up to float rounding) and gradients flow into the prompt computation from every row.

The warm start's SFT batches share a prefix too: every example opens with the same router prompt
(instructions and model descriptors) before its question. ``shared_prefix_sft_trainer`` runs
the longest prefix common to a whole batch once and the right-padded rest of each row over it.
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


def prefix_cache(
    model,
    prefix_ids: torch.Tensor,
    prefix_mask: torch.Tensor,
    inverse: torch.Tensor,
    position_ids: torch.Tensor | None = None,
) -> DynamicCache:
    """Run each distinct prefix once, with gradients, and index its key/value cache out to the
    rows: row ``i`` gets prefix ``inverse[i]``. The gather is differentiable, so each prefix's
    activations receive the gradients of every row that attends to it."""
    extra = {} if position_ids is None else {"position_ids": position_ids}
    prefix = model(
        input_ids=prefix_ids,
        attention_mask=prefix_mask,
        use_cache=True,
        logits_to_keep=1,  # only the cache is needed; skip the vocabulary projection
        **extra,
    )
    cache = prefix.past_key_values
    if not isinstance(cache, DynamicCache):
        raise TypeError(f"expected a DynamicCache from the prefix pass, got {type(cache).__name__}")
    cache.batch_select_indices(inverse)
    return cache


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
    cache = prefix_cache(model, input_ids[first, :split], attention_mask[first, :split], inverse)
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


def common_prefix_length(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
) -> int:
    """How many leading columns a whole SFT batch can share: columns whose ids are equal in
    every row and real tokens everywhere, and whose next-token targets are all ignored, so no
    logit of the prefix enters the loss. ``labels`` are unshifted, as TRL's collator writes
    them (position ``t`` predicts column ``t + 1``). At most all but the last column."""
    same = (input_ids == input_ids[:1]).all(dim=0) & (attention_mask != 0).all(dim=0)
    untrained_next = (labels[:, 1:] == -100).all(dim=0)
    ok = same[:-1] & untrained_next
    stop = (~ok).nonzero()
    return int(stop[0]) if stop.numel() else int(ok.numel())


def _widen(values: torch.Tensor | None, split: int) -> torch.Tensor | None:
    """Suffix positions' per-token values laid out like the plain forward's ``(batch,
    seq_len - 1)``: zeros (ignored) at the prefix's positions, the suffix's last position (it
    predicts nothing) dropped."""
    if values is None:
        return None
    values = values[:, :-1]
    return torch.cat([values.new_zeros(values.size(0), split), values], dim=1)


SFT_INPUTS = frozenset({"input_ids", "attention_mask", "labels", "position_ids", "use_cache"})


def shared_prefix_sft_forward(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    position_ids: torch.Tensor | None = None,
):
    """TRL's fused-head SFT forward, ``model(..., labels=labels, fused_lm_head=True)``, with the
    prefix common to the whole batch run once.

    The prefix (`common_prefix_length`) runs as one row with gradients; its cache is expanded
    to every row and each row's right-padded suffix runs over it. Returns a
    ``FusedCausalLMOutput`` with the plain forward's fields and shapes (per-token values zero
    at the prefix's positions, where every target is ignored), or None where the batch has a
    single row or shares no column (the caller then runs the plain forward). ``model`` must
    carry TRL's fused LM head, as SFTTrainer's models do.
    """
    from trl.trainer.utils import FusedCausalLMOutput

    rows = input_ids.size(0)
    split = common_prefix_length(input_ids, attention_mask, labels)
    if rows < 2 or split < 1:
        return None
    cache = prefix_cache(
        model,
        input_ids[:1, :split],
        attention_mask[:1, :split],
        torch.zeros(rows, dtype=torch.long, device=input_ids.device),
        None if position_ids is None else position_ids[:1, :split],
    )
    # shifted targets: suffix position j predicts column split + j + 1; the last has none
    targets = labels[:, split + 1 :]
    shift_labels = torch.cat([targets, torch.full_like(targets[:, :1], -100)], dim=1)
    extra = {} if position_ids is None else {"position_ids": position_ids[:, split:]}
    out = model(
        input_ids=input_ids[:, split:],
        attention_mask=attention_mask,
        past_key_values=cache,
        shift_labels=shift_labels,
        fused_lm_head=True,
        **extra,
    )
    return FusedCausalLMOutput(
        loss=out.loss,
        log_probs=_widen(out.log_probs, split),
        entropy=_widen(out.entropy, split),
        log_sum_sq_probs=_widen(out.log_sum_sq_probs, split),
        mean_logits=_widen(out.mean_logits, split),
        is_top1=_widen(out.is_top1, split),
        label_mask=_widen(out.label_mask, split),
        aux_loss=out.aux_loss,
    )


class _SharedPrefixCall:
    """Stands in for the model inside SFTTrainer.compute_loss: its fused-head training forward
    goes through `shared_prefix_sft_forward`; any other call, or one with inputs that pass
    does not know (padding-free packing, MoE router logits), goes to the model unchanged."""

    def __init__(self, model, counts: dict[str, int]) -> None:
        self._model = model
        self._counts = counts

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __call__(self, *args, **kwargs):
        if not args and kwargs.get("fused_lm_head") and "labels" in kwargs:
            inputs = {k: v for k, v in kwargs.items() if k != "fused_lm_head"}
            if inputs.keys() <= SFT_INPUTS and inputs.get("attention_mask") is not None:
                inputs.pop("use_cache", None)
                out = shared_prefix_sft_forward(self._model, **inputs)
                if out is not None:
                    self._counts["shared"] += 1
                    return out
        self._counts["plain"] += 1
        return self._model(*args, **kwargs)


def shared_prefix_sft_trainer(base: type) -> type:
    """An SFTTrainer subclass whose loss forward runs each batch's common prefix once.

    Built lazily so importing this module does not import TRL. The loss, its normalization and
    the logged metrics are TRL's own; only the forward that produces the per-token log-probs
    changes. Custom losses, label smoothing and sequence parallelism use TRL's pass unchanged.
    ``shared_prefix_batches`` counts the batches that went each way.
    """

    class SharedPrefixSFTTrainer(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.shared_prefix_batches = {"shared": 0, "plain": 0}

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            parallelism = getattr(self.accelerator, "parallelism_config", None)
            if (
                model.training
                and self.compute_loss_func is None
                and self.label_smoother is None
                and not self.aux_loss_enabled
                and not getattr(parallelism, "sp_enabled", False)
            ):
                model = _SharedPrefixCall(model, self.shared_prefix_batches)
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    return SharedPrefixSFTTrainer
