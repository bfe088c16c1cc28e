"""Stage of ``workflow/rules/models.smk``: fetch one model's weights."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def fetch(source: Mapping[str, Any], dest: str) -> Path:
    from routerr1.models import fetch_model, source_from_dict

    return fetch_model(source_from_dict(source), Path(dest))
