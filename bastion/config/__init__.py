"""Configuration: one TOML file, validated at start-up."""

from bastion.config.load import load_config
from bastion.config.model import BastionConfig, MountConfig

__all__ = ["BastionConfig", "MountConfig", "load_config"]
