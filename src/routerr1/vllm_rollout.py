"""Policy rollouts through vLLM during training (TRL's ``use_vllm``), chosen by config ``vllm``.

With ``vllm.enabled: false`` (the default) the rollout generates with transformers. With
``vllm.enabled: true`` the GRPO trainer starts TRL's vLLM engine (``vllm.mode: colocate``: inside
each training process, sharing its GPU; ``server``: a ``trl vllm-serve`` server) and syncs the
policy's weights into it every step, and :class:`VllmRolloutEngine` samples the policy's tokens
from it. Only the token source changes: the multi-turn loop, the cuts at ``</search>`` and
``</answer>``, the injected ``<information>`` blocks and ``env_mask`` are those of
:class:`routerr1.rollout.RolloutEngine`, inherited unchanged.

The multi-turn rollout issues a different number of generate calls on each process, so it uses
only vLLM paths without cross-process collectives: colocate with tensor parallel size 1, or
server mode from a single training process (TRL's client lives on rank 0 only).
"""

from __future__ import annotations

import time
from typing import Any

from routerr1.config import VllmConfig
from routerr1.rollout import STOP_STRINGS, RolloutEngine, _strip_generated


def check_runtime(vcfg: VllmConfig, processes: int, cuda: bool, vllm_installed: bool) -> None:
    """Refuse a vLLM setting this job cannot run, before any model loads."""
    if not vcfg.enabled:
        return
    if not cuda:
        raise ValueError("vllm.enabled: vLLM rollouts need a GPU; torch sees none")
    if not vllm_installed:
        raise ValueError(
            "vllm.enabled: the vllm package is not installed (pip install -e .[vllm], GPU only)"
        )
    if vcfg.mode == "server" and processes > 1:
        raise ValueError(
            f"vllm.mode: 'server' serves one training process, not {processes} "
            "(TRL's client lives on rank 0); use 'colocate'"
        )


def grpo_vllm_kwargs(vcfg: VllmConfig) -> dict[str, Any]:
    """GRPOConfig arguments for the chosen path (none for transformers)."""
    if not vcfg.enabled:
        return {}
    kwargs: dict[str, Any] = {
        "use_vllm": True,
        "vllm_mode": vcfg.mode,
        # our rollout returns no sampling log-probs (injected tokens have none to correct)
        "vllm_importance_sampling_correction": False,
    }
    if vcfg.mode == "colocate":
        kwargs.update(
            vllm_gpu_memory_utilization=vcfg.gpu_memory_utilization,
            vllm_tensor_parallel_size=1,  # >1 would put a collective in every generate call
            vllm_enable_sleep_mode=vcfg.enable_sleep_mode,
        )
    else:
        kwargs["vllm_server_base_url"] = vcfg.server_base_url
    return kwargs


def sampling_settings(max_new: int, greedy: bool, temperature: float, top_p: float) -> dict:
    """vLLM sampling parameters matching the transformers path (stop after an action tag)."""
    settings: dict[str, Any] = {
        "n": 1,
        "max_tokens": max_new,
        "stop": list(STOP_STRINGS),
        "include_stop_str_in_output": True,
    }
    if greedy:
        settings.update(temperature=0.0, top_p=1.0, top_k=0)
    else:
        settings.update(temperature=temperature, top_p=top_p, top_k=0)  # 0: no top-k cut
    return settings


class VllmRolloutEngine(RolloutEngine):
    """The multi-turn rollout with the policy's tokens sampled by TRL's vLLM engine."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.vllm: Any = None

    def attach(self, vllm_generation: Any) -> None:
        """Use the trainer's ``VLLMGeneration`` (weights synced by TRL before each rollout)."""
        self.vllm = vllm_generation

    def _generate(self, model, contexts: list[list[int]], max_new: int, greedy: bool):
        if self.vllm is None:
            raise RuntimeError("VllmRolloutEngine: attach() the trainer's vLLM engine first")
        t0 = time.perf_counter()
        settings = sampling_settings(max_new, greedy, self.cfg.temperature, self.cfg.top_p)
        if self.vllm.mode == "colocate":
            from vllm import SamplingParams

            outputs = self.vllm.llm.generate(
                [{"prompt_token_ids": list(c)} for c in contexts],
                sampling_params=SamplingParams(**settings),
                use_tqdm=False,
            )
            rows = [list(out.outputs[0].token_ids) for out in outputs]
        else:
            stop = {k: settings.pop(k) for k in ("stop", "include_stop_str_in_output")}
            settings.pop("n")
            rows = self.vllm.vllm_client.generate(
                prompts=[list(c) for c in contexts], n=1, generation_kwargs=stop, **settings
            )["completion_ids"]
        outs = [_strip_generated(list(r), self.eos_ids, self.tok.pad_token_id)[0] for r in rows]
        self.timings["policy_generate_s"] += time.perf_counter() - t0
        return outs
