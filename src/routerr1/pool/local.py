"""In-process pool member: batched greedy question answering with transformers.

A ``LocalModel`` wraps one Hugging Face model folder (see ``routerr1.models.fetch_model``) and
answers short factual questions:

* ``chat`` style (instruct models): one user message asking for a short, direct answer, through
  the tokenizer's chat template. Small instruct models ramble otherwise (DESIGN section 3).
* ``fewshot`` style (base models): three ``Question: ...\\nAnswer: ...`` examples, then the
  question; generation stops at the first newline.

Both prompts are built as chat messages by ``routerr1.pool.messages`` (shared with the openai
backend and ``serve-pool``), then rendered here. ``prompt`` picks another way of asking (e.g.
``reason``: step by step, then ``Answer: ...``) and ``extract`` how the answer is read back; two
``LocalModel`` objects given the same :class:`LocalWeights` (``load_weights``) share one copy of
the weights, so one model can sit in a pool under two names with two prompts. Requests are
sorted by prompt length and batched, so left padding stays small. Torch thread counts are the
caller's business (set them from the config).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DynamicCache,
    GenerationConfig,
    StoppingCriteria,
    StoppingCriteriaList,
)

from routerr1.kvcache import MIN_SHARED_PREFIX, common_prefix_length, plain_cache
from routerr1.packed_linear import pack_linears
from routerr1.pool.backend import Generation
from routerr1.pool.messages import (
    CHAT_INSTRUCTION,
    DEFAULT_FEWSHOT,
    PROMPT_STYLES,
    Message,
    check_prompt,
    clean_answer,
    extract_answer,
    question_messages,
    render_fewshot,
    resolve_extract,
)
from routerr1.precision import resolve_dtype, resolve_linear_kernel

__all__ = [
    "CHAT_INSTRUCTION",
    "DEFAULT_FEWSHOT",
    "PROMPT_STYLES",
    "Generation",
    "LocalModel",
    "LocalWeights",
    "clean_answer",
    "load_weights",
]

log = logging.getLogger(__name__)

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}
# Turn-end tokens that instruct models emit instead of (or besides) the tokenizer's EOS.
_TURN_END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<end_of_turn>", "<|eot_id|>", "<eos>")


class _StopOnTokens(StoppingCriteria):
    """Stops each row once its last token is in ``stop_ids`` or decodes to text with a newline.

    Decoding only the newest token per row (cached per id) avoids scanning a 262k vocabulary.
    """

    def __init__(self, tokenizer, stop_ids: set[int], stop_on_newline: bool) -> None:
        self.tokenizer = tokenizer
        self.stop_ids = stop_ids
        self.stop_on_newline = stop_on_newline
        self._has_newline: dict[int, bool] = {}

    def is_stop(self, token_id: int) -> bool:
        if token_id in self.stop_ids:
            return True
        if not self.stop_on_newline:
            return False
        if token_id not in self._has_newline:
            piece = self.tokenizer.decode([token_id], skip_special_tokens=False)
            self._has_newline[token_id] = "\n" in piece
        return self._has_newline[token_id]

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        last = input_ids[:, -1].tolist()
        return torch.tensor([self.is_stop(t) for t in last], dtype=torch.bool)


@dataclass(eq=False)  # identity, not value, equality: a cache key is the folder and dtype
class LocalWeights:
    """A loaded model and its tokenizer (left padding), shareable by several LocalModels."""

    model: Any
    tokenizer: Any
    path: Path
    dtype: str


def load_weights(path: Path, dtype: str = "auto", linear_kernel: str = "auto") -> LocalWeights:
    """Load the tokenizer and the model of ``path`` in ``dtype``, ready for batched greedy
    generation (left padding, a pad token, eval mode). ``auto``: bf16 only where this CPU runs
    it natively, and fp32 linear layers prepacked for oneDNN where MKL's are slow
    (`routerr1.precision`)."""
    if dtype != "auto" and dtype not in DTYPES:
        raise ValueError(f"dtype: {dtype!r} is not one of {sorted(DTYPES) + ['auto']}")
    if dtype == "auto":
        dtype = resolve_dtype(dtype, "dtype", "cpu").value
    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype])
    model.eval()
    kernel = resolve_linear_kernel(linear_kernel, dtype, "cpu")
    if kernel.value == "onednn":
        log.info(
            "%s: %d linear layers packed for oneDNN (%s)",
            path.name,
            pack_linears(model),
            kernel.reason,
        )
    return LocalWeights(model, tokenizer, path, dtype)


class LocalModel:
    """A Hugging Face causal LM answering questions in batches, greedily, in process."""

    def __init__(
        self,
        path: Path,
        prompt_style: str = "chat",
        dtype: str = "auto",
        max_batch_size: int = 16,
        fewshot: Sequence[tuple[str, str]] = DEFAULT_FEWSHOT,
        system_prompt: str | None = None,
        stop_at_newline: bool | None = None,
        chat_examples: bool = False,
        decode_segment: int = 8,
        share_prefix: bool = True,
        prompt: str = "short",
        extract: str | None = None,
        weights: LocalWeights | None = None,
    ) -> None:
        """``stop_at_newline`` defaults to True for fewshot and False for chat (chat models
        may open with a newline; their answers are cut at the first newline anyway).
        ``chat_examples`` (chat style) puts the ``fewshot`` pairs before the question as earlier
        user/assistant turns: longer prompts, but small models then answer in a few words.
        ``decode_segment`` (0 = off): generate a batch this many tokens at a time and drop the
        rows that stopped, so one long answer does not drag the whole batch to its end.
        ``share_prefix``: a batch's common prompt prefix (chat template, instruction, worked
        examples) is prefilled once and its KV cache shared by every row.
        ``prompt`` / ``extract``: names in ``routerr1.pool.messages.PROMPTS`` / ``EXTRACTORS``
        (``extract`` None: the prompt's own). ``weights``: already loaded weights of ``path``
        in ``dtype`` to use instead of loading them again."""
        check_prompt(prompt, prompt_style, chat_examples)
        if dtype != "auto" and dtype not in DTYPES:
            raise ValueError(f"dtype: {dtype!r} is not one of {sorted(DTYPES) + ['auto']}")
        if dtype == "auto":  # bf16 only where this CPU runs it natively
            dtype = resolve_dtype(dtype, "dtype", "cpu").value
        self.dtype = dtype
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size: {max_batch_size!r} must be at least 1")
        if decode_segment < 0:
            raise ValueError(f"decode_segment: {decode_segment!r} must be 0 (off) or positive")
        self.decode_segment = decode_segment
        self.share_prefix = share_prefix
        self.path = Path(path)
        self.prompt_style = prompt_style
        self.prompt_name = prompt
        self.extract = resolve_extract(prompt, extract)
        self.max_batch_size = max_batch_size
        self.fewshot = tuple(fewshot)
        self.system_prompt = system_prompt
        self.chat_examples = chat_examples
        self.stop_at_newline = (
            prompt_style == "fewshot" if stop_at_newline is None else bool(stop_at_newline)
        )
        if weights is None:
            weights = load_weights(self.path, dtype)
        elif (Path(weights.path), weights.dtype) != (self.path, dtype):
            raise ValueError(
                f"weights: loaded from {str(weights.path)!r} in {weights.dtype}, not "
                f"{str(self.path)!r} in {dtype}"
            )
        self.weights = weights
        self.tokenizer = weights.tokenizer
        if prompt_style == "chat" and not self.tokenizer.chat_template:
            raise ValueError(
                f"prompt_style: 'chat' needs a chat template, and {str(self.path)!r} has none "
                "(a base model? use 'fewshot')"
            )
        self.model = weights.model
        self.stop_ids = self._stop_ids()

    def _stop_ids(self) -> set[int]:
        ids: set[int] = set()
        for value in (self.tokenizer.eos_token_id, self.model.generation_config.eos_token_id):
            if isinstance(value, int):
                ids.add(value)
            elif value is not None:
                ids.update(value)
        if self.prompt_style == "chat":
            vocab = self.tokenizer.get_vocab()
            ids.update(vocab[t] for t in _TURN_END_TOKENS if t in vocab)
        return ids

    def messages(self, question: str) -> list[Message]:
        """The chat messages asking ``question`` (what the openai backend would send)."""
        return question_messages(
            question,
            self.prompt_style,
            self.fewshot,
            self.chat_examples,
            self.system_prompt,
            prompt=self.prompt_name,
        )

    def render(self, messages: Sequence[Message]) -> str:
        """Prompt text for ``messages``: the chat template (``chat``), or the
        ``Question:/Answer:`` transcript (``fewshot``)."""
        if self.prompt_style == "chat":
            return self.tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=True
            )
        return render_fewshot(messages)

    def prompt(self, question: str) -> str:
        """The full prompt text for ``question`` in this model's style."""
        return self.render(self.messages(question))

    def encode_messages(self, messages: Sequence[Message]) -> list[int]:
        """Prompt token ids. Chat templates carry their own special tokens; fewshot prompts get
        the tokenizer's (e.g. Gemma's BOS)."""
        add_special = self.prompt_style == "fewshot"
        return self.tokenizer(self.render(messages), add_special_tokens=add_special).input_ids

    def encode(self, question: str) -> list[int]:
        return self.encode_messages(self.messages(question))

    def answer(self, questions: Sequence[str], max_new_tokens: int = 32) -> list[Generation]:
        """Answer each question; results are in input order, the short answer extracted. A
        failing batch yields Generations with ``error`` set instead of raising."""
        gens = self.complete([self.encode(q) for q in questions], max_new_tokens)
        for gen in gens:
            gen.text = extract_answer(gen.text, self.extract)
        return gens

    def complete(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int = 32,
        stop_at_newline: bool | None = None,
    ) -> list[Generation]:
        """Greedy raw completions of token-id prompts, in input order (``serve-pool`` uses this
        directly). ``stop_at_newline`` defaults to the model's setting."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: {max_new_tokens!r} must be at least 1")
        newline = self.stop_at_newline if stop_at_newline is None else bool(stop_at_newline)
        encoded = [list(p) for p in prompts]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        results: list[Generation | None] = [None] * len(encoded)
        for start in range(0, len(order), self.max_batch_size):
            batch = order[start : start + self.max_batch_size]
            gens = self._run_batch([encoded[i] for i in batch], max_new_tokens, newline)
            for i, gen in zip(batch, gens, strict=True):
                results[i] = gen
        return [g for g in results if g is not None]

    def _run_batch(
        self, prompts: list[list[int]], max_new_tokens: int, stop_at_newline: bool
    ) -> list[Generation]:
        t0 = time.perf_counter()
        try:
            rows = self._generate(prompts, max_new_tokens, stop_at_newline)
        except Exception as exc:  # one bad batch must not take the pool down
            latency = time.perf_counter() - t0
            log.exception("generation failed for a batch of %d prompts", len(prompts))
            error = f"{type(exc).__name__}: {exc}"
            return [Generation("", len(p), 0, latency, error=error) for p in prompts]
        latency = time.perf_counter() - t0
        return [
            Generation(text, len(p), n_out, latency, finish_reason=reason)
            for p, (text, n_out, reason) in zip(prompts, rows, strict=True)
        ]

    def _prefix_cache(self, prefix: list[int], n_rows: int):
        """The KV cache of ``prefix``, computed once and repeated for ``n_rows`` rows; None when
        the prefix is short or the model's cache cannot be shared that way (sliding windows).
        Positions then skip the tails' left padding, as generate() derives them from the mask."""
        if len(prefix) < MIN_SHARED_PREFIX:
            return None
        with torch.inference_mode():
            out = self.model(
                input_ids=torch.tensor([prefix], dtype=torch.long), use_cache=True, logits_to_keep=1
            )
        cache = out.past_key_values
        if not plain_cache(cache):
            return None
        cache.batch_select_indices(torch.zeros(n_rows, dtype=torch.long))
        return cache

    def _generate(
        self, prompts: list[list[int]], max_new_tokens: int, stop_at_newline: bool
    ) -> list[tuple[str, int, str]]:
        pad_id = self.tokenizer.pad_token_id
        # [common prefix][each prompt's tail, left-padded]; no prefix: plain left padding
        common = common_prefix_length(prompts) if self.share_prefix and len(prompts) > 1 else 0
        cache = self._prefix_cache(prompts[0][:common], len(prompts)) if common else None
        if cache is None:
            common = 0
        width = common + max(len(p) - common for p in prompts)
        ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        ids[:, :common] = torch.tensor(prompts[0][:common], dtype=torch.long)
        mask[:, :common] = 1
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) + common :] = torch.tensor(prompt[common:])
            mask[row, width - len(prompt) + common :] = 1
        stopper = _StopOnTokens(self.tokenizer, self.stop_ids, stop_at_newline)
        segment = self.decode_segment if len(prompts) > 1 else 0
        made: list[list[int]] = [[] for _ in prompts]
        stopped = [False] * len(prompts)
        rows = list(range(len(prompts)))
        left = max_new_tokens
        with torch.inference_mode():
            while rows:
                config = GenerationConfig(
                    do_sample=False,
                    max_new_tokens=min(segment, left) if segment else left,
                    pad_token_id=pad_id,
                    eos_token_id=sorted(self.stop_ids),
                    return_dict_in_generate=True,
                )
                out = self.model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    past_key_values=cache,
                    generation_config=config,
                    stopping_criteria=StoppingCriteriaList([stopper]),
                )
                new = out.sequences[:, ids.size(1) :]
                left -= new.size(1)
                keep = []
                for r, row in enumerate(rows):
                    if stopped[row]:  # kept only when the cache could not drop it
                        continue
                    # generate() pads finished rows; a row ends at its first stop token
                    for token in new[r].tolist():
                        made[row].append(token)
                        if stopper.is_stop(token):
                            stopped[row] = True
                            break
                    if not stopped[row] and left > 0:
                        keep.append(r)
                if not keep:
                    break
                cache = out.past_key_values
                ids = out.sequences
                mask = torch.cat([mask, torch.ones_like(new)], dim=1)
                if len(keep) < len(rows):
                    if not isinstance(cache, DynamicCache):  # cannot drop rows: finish whole
                        segment = 0
                        keep = list(range(len(rows)))
                    else:
                        cache.batch_select_indices(torch.tensor(keep))
                    ids, mask, rows = ids[keep], mask[keep], [rows[r] for r in keep]
        return [
            (
                self.tokenizer.decode(tokens, skip_special_tokens=True),
                len(tokens),
                "stop" if done else "length",
            )
            for tokens, done in zip(made, stopped, strict=True)
        ]
