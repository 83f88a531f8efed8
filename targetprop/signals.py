"""Ctrl-C and SIGTERM while the command line is still loading PyTorch (a few seconds): one line, not a traceback.

``targetprop/__init__.py`` calls :func:`guard` first and :func:`release` last. Only when the package is loading as
the ``targetprop`` command (or ``python -m targetprop``) does :func:`guard` install handlers; a program that merely
imports the library keeps its own, and the previous handlers are back once the import is done. After that,
:func:`targetprop.cli.main` handles the signals (a training loop names the command that continues the run).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

EXIT = {signal.SIGINT: (130, "interrupted"), signal.SIGTERM: (143, "terminated")}


def _stop(signum: int, frame: Any) -> None:
    code, what = EXIT[signal.Signals(signum)]
    sys.stderr.write(f"error: {what}\n")
    sys.stderr.flush()
    os._exit(code)


def guard() -> dict[int, Any] | None:
    launched = sys.argv and (Path(sys.argv[0]).name == "targetprop" or sys.argv[0] == "-m")
    if not launched or threading.current_thread() is not threading.main_thread():
        return None
    return {sig: signal.signal(sig, _stop) for sig in EXIT}


def release(previous: dict[int, Any] | None) -> None:
    for sig, handler in (previous or {}).items():
        signal.signal(sig, handler)
