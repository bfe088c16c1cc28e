"""Typed pipeline configuration: the one place config types live.

The YAML is validated against ``workflow/schemas/config.schema.yaml`` (the same schema Snakemake's
``validate`` uses), defaults are filled in, then cross-field rules the schema cannot express are
checked; every error names the offending key. :meth:`RunConfig.from_dict` types every section
once. Import from here; the modules split the concerns:

- :mod:`~routerr1.config.schema`: the schema as package data, ``ConfigError``, schema defaults;
- :mod:`~routerr1.config.validate`: ``validate_config``, ``load_config`` / ``load_configs``
  (layered files) and the semantic checks;
- :mod:`~routerr1.config.sections`: the section dataclasses;
- :mod:`~routerr1.config.vllm`: the ``vllm`` section and a pool entry's ``vllm:`` server options;
- :mod:`~routerr1.config.run`: ``RunConfig``, the section builders and seed/alpha helpers.

Of the rest of routerr1 this package imports only ``routerr1.pool.messages``, lazily (to check
``pool[].prompt`` names), so every module may build on it.
"""

from routerr1.config.run import (
    RunConfig,
    alpha_label,
    data_config,
    eval_config,
    extended_pool_config,
    launch_config,
    pool_entries,
    rollout_config,
    seed_level,
    source_fingerprint,
    train_config,
    train_seeds,
    vllm_config,
    warm_start_config,
)
from routerr1.config.schema import SCHEMA_RESOURCE, ConfigError
from routerr1.config.sections import (
    ANSWER_SOURCES,
    LAUNCHERS,
    PER_ALPHA_ROUTING,
    ROUTING_RULES,
    DataConfig,
    EvalConfig,
    LaunchConfig,
    PoolEntry,
    RolloutConfig,
    SamplingConfig,
    TrainConfig,
    WarmStartConfig,
    check_benchmark_name,
)
from routerr1.config.validate import (
    canonical_model_key,
    load_config,
    load_configs,
    validate_config,
)
from routerr1.config.vllm import MANAGED_FLAGS, VLLM_MODES, VllmConfig, VllmOptions

__all__ = [
    "ANSWER_SOURCES",
    "LAUNCHERS",
    "MANAGED_FLAGS",
    "PER_ALPHA_ROUTING",
    "ROUTING_RULES",
    "SCHEMA_RESOURCE",
    "VLLM_MODES",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "LaunchConfig",
    "PoolEntry",
    "RolloutConfig",
    "RunConfig",
    "SamplingConfig",
    "TrainConfig",
    "VllmConfig",
    "VllmOptions",
    "WarmStartConfig",
    "alpha_label",
    "canonical_model_key",
    "check_benchmark_name",
    "data_config",
    "eval_config",
    "extended_pool_config",
    "launch_config",
    "load_config",
    "load_configs",
    "pool_entries",
    "rollout_config",
    "seed_level",
    "source_fingerprint",
    "train_config",
    "train_seeds",
    "validate_config",
    "vllm_config",
    "warm_start_config",
]
