"""Bundled experiment configurations (TOML), used as ``--config NAME``."""
