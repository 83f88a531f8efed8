"""``targetprop`` and ``python -m targetprop``: the command line, with Ctrl-C and SIGTERM handled from the start.

A Ctrl-C (exit status 130) or SIGTERM (143) while the command line loads ends it with one line, like one that
arrives later (see :func:`targetprop.cli.main`, which also covers PyTorch: the commands load it when they start).
"""

from __future__ import annotations

import os
import signal
import sys

STOPPED = (130, 143)
"""The exit statuses of a command stopped by Ctrl-C and by SIGTERM."""


def main() -> None:
    from targetprop.errors import Terminated

    def terminate(signum: int, frame: object) -> None:
        raise Terminated()

    signal.signal(signal.SIGTERM, terminate)
    try:
        from targetprop.cli import main as cli_main
    except KeyboardInterrupt as e:
        terminated = isinstance(e, Terminated)
        sys.stderr.write("error: terminated\n" if terminated else "error: interrupted\n")
        sys.exit(143 if terminated else 130)
    try:
        cli_main()
    except SystemExit as e:
        if e.code not in STOPPED:
            raise
        # CPython marks a KeyboardInterrupt that left a string `exec` as unhandled even after it was caught
        # (dataclasses build their methods so, while a library loads), and under `python -m` it then ends the
        # process by SIGINT whatever status it exits with. The status is the contract, so the process ends here,
        # with it: every `finally` has run; only the buffered output is left to write.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(e.code)


if __name__ == "__main__":
    main()
