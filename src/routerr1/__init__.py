"""routerr1: a reproducible Router-R1 pipeline."""

__version__ = "0.1.0"
