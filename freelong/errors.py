"""Errors a user sees as one line (the app prints them and exits with status 2), shared by every layer."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is wrong; raised before any heavy work."""


class MissingWeightsError(FileNotFoundError):
    """Required weights are not on this machine; raised before anything heavy is loaded.

    ``missing`` holds the names of the missing weights (the message lists where each was looked for and
    the command that fetches it).
    """

    def __init__(self, message: str, missing: list[str] | None = None):
        super().__init__(message)
        self.missing = list(missing or [])


class WeightChecksumError(ValueError):
    """A weight file is present but its SHA-256 differs from the expected one."""


class DeviceUnavailableError(ConfigError):
    """The requested device does not exist on this machine."""


def error_exit(error: object) -> int:
    """Print ``error: <message>`` on stderr as the one line a command-line user sees; the exit status (2)."""
    import sys

    print(f"error: {error}", file=sys.stderr)
    return 2


__all__ = ["ConfigError", "DeviceUnavailableError", "MissingWeightsError", "WeightChecksumError", "error_exit"]
