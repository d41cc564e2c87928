"""Configuration: the YAML schema, loading with clear errors, and experiment directories."""
from model_foundry.config.loading import LoadedConfig, load_config, parse_overrides
from model_foundry.config.schema import FoundryConfig

__all__ = ["FoundryConfig", "LoadedConfig", "load_config", "parse_overrides"]
