"""``targetprop`` and ``python -m targetprop``: the command line, with Ctrl-C and SIGTERM handled from the start.

Loading PyTorch takes seconds; a Ctrl-C (exit status 130) or SIGTERM (143) in that time ends the command with
one line (see :mod:`targetprop.signals`), like one that arrives later (see :func:`targetprop.cli.main`).
"""

from __future__ import annotations

import signal
import sys


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
    cli_main()


if __name__ == "__main__":
    main()
