"""Glue between Snakemake scripts and the library: logging, threads, slugs."""

from __future__ import annotations

import logging
import re
import sys
from contextlib import contextmanager
from pathlib import Path


def slug(name: str) -> str:
    """File-safe form of a pool model name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


@contextmanager
def snakemake_job(smk):
    """Send stdout/stderr (progress bars included) to the rule's log and set torch threads."""
    log_path = Path(smk.log[0]) if smk.log else None
    stream = None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        stream = open(log_path, "a", buffering=1)  # noqa: SIM115
        sys.stdout = sys.stderr = stream
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
        force=True,
    )
    try:
        import torch

        torch.set_num_threads(max(1, int(getattr(smk, "threads", 1) or 1)))
    except ImportError:
        pass
    try:
        yield
    except Exception:
        logging.getLogger("routerr1").exception("job failed")
        raise
    finally:
        if stream is not None:
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
            stream.close()
