"""Errors a user can fix. The command line prints them as one line, never as a traceback."""


class TargetpropError(Exception):
    """Base class: the message says what is wrong and how to fix it, in one line."""


class ConfigError(TargetpropError):
    """A configuration, architecture string or command-line value is invalid."""


class DataError(TargetpropError):
    """A dataset is missing, corrupt, or cannot be downloaded."""


class DivergedError(TargetpropError):
    """Training produced NaN or inf."""
