"""Errors a user can fix. The command line prints them as one line, never as a traceback."""


class TargetpropError(Exception):
    """Base class: the message says what is wrong and how to fix it, in one line."""

    exit_code = 2
    """The command line's exit status for this error."""


class ConfigError(TargetpropError):
    """A configuration, architecture string or command-line value is invalid."""


class DataError(TargetpropError):
    """A dataset is missing, corrupt, or cannot be downloaded."""


class DivergedError(TargetpropError):
    """Training produced NaN or inf."""


class Interrupted(TargetpropError):
    """Ctrl-C (exit status 130) or SIGTERM (143) stopped a command; the message says how to continue."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code

    @classmethod
    def by(cls, stop: KeyboardInterrupt, then: str) -> "Interrupted":
        """The error for ``stop``, Ctrl-C (130, "interrupted") or :class:`Terminated` (143, "terminated"), its
        message that word followed by ``then`` (where it stopped, how to continue)."""
        terminated = isinstance(stop, Terminated)
        return cls(f"{'terminated' if terminated else 'interrupted'}{then}", 143 if terminated else 130)


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM, so that a terminated run stops as cleanly as an interrupted one."""


def warn(line: str) -> None:
    """A one-line warning on stderr (no markup, no wrapping: paths stay whole)."""
    from rich.console import Console

    from targetprop.console import print_line

    print_line(Console(stderr=True), line)
