"""The one error type of a config that cannot run."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A config that cannot run; the message says what to change."""
