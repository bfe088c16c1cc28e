"""The config schema, read as package data, and the two things built from it.

``workflow/schemas/config.schema.yaml`` is the one place config defaults are written: Snakemake's
``validate`` reads it from the workflow tree, the library reads the same file as package data
(``src/routerr1/config.schema.yaml`` links to it; a built wheel carries a copy), so an installed
routerr1 validates without the workflow tree. Each section's dataclass takes its field defaults
from it through :func:`schema_default`.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping
from dataclasses import field
from importlib.resources import files
from typing import Any

import yaml

# Package data of ``routerr1`` (beside this package, not inside it)
SCHEMA_RESOURCE = "config.schema.yaml"


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key."""


@functools.cache
def load_schema() -> dict[str, Any]:
    """The parsed config schema (read once)."""
    return yaml.safe_load(files("routerr1").joinpath(SCHEMA_RESOURCE).read_text())


def schema_section(*path: str) -> Mapping[str, Any]:
    """The ``properties`` of a schema object: a top-level section, or a ``$defs`` entry."""
    node = load_schema()
    for key in path:
        node = node[key] if key == "$defs" else node.get("properties", node)[key]
    return node["properties"]


def schema_default(section: Mapping[str, Any], key: str, cast: Callable[[Any], Any] | None = None):
    """A dataclass field whose default is the schema's (the one place defaults live); lists
    become tuples, so the frozen dataclasses stay hashable; ``cast`` (float) keeps a float field
    a float where the YAML default is written as an integer."""
    value = copy.deepcopy(section[key]["default"])
    if isinstance(value, dict):
        return field(default_factory=lambda: copy.deepcopy(value), hash=False)
    if isinstance(value, list):
        value = tuple(value)
    if cast is not None and value is not None:
        value = cast(value)
    return field(default=value)


def check_choice(field: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{field}: {value!r} is not one of {list(choices)}")
