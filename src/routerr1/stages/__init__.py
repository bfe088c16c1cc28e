"""One function per pipeline stage: what each Snakemake rule runs, callable without Snakemake.

One module per rule file (``workflow/rules/<name>.smk``): :mod:`.data`, :mod:`.models`,
:mod:`.pool`, :mod:`.train`, :mod:`.evaluate` and :mod:`.baselines`; :mod:`.common` holds what they
share (building the pool, its price table and hash, and :func:`.common.pool_stage`, the tracked
MLflow run that logs evaluation rows and writes them atomically).

Every stage takes the typed config (:class:`routerr1.config.RunConfig`, built once per job) and
plain paths, including the fetched model folders the rule declares (``input.models``), writes
its outputs atomically, and records what it did in MLflow.
"""
