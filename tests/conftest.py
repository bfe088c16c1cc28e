"""Shared fixtures: a tiny FlashRAG-layout mirror written by the tests themselves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

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
HOTPOT = [
    ("which is older, the eiffel tower or the statue of liberty", ["Statue of Liberty"]),
    ("are paris and lyon both in france", ["yes"]),
    ("what river flows through the capital of egypt", ["Nile", "the Nile"]),
    ("in which country is the city where mozart was born", ["Austria"]),
    ("which planet is larger, mars or venus", ["Venus"]),
    ("the author of 1984 was born in which country", ["India"]),
]


def write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for i, (q, answers) in enumerate(rows):
            fh.write(json.dumps({"id": f"{path.stem}_{i}", "question": q, "golden_answers": answers}))
            fh.write("\n")


@pytest.fixture(scope="session")
def tiny_mirror(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("flashrag")
    write_jsonl(root / "nq" / "train.jsonl", NQ[:8])
    write_jsonl(root / "nq" / "test.jsonl", NQ[8:])
    write_jsonl(root / "hotpotqa" / "dev.jsonl", HOTPOT)
    return root
