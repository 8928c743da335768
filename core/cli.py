"""One error policy for every ``python -m core.…`` command.

A user who points a command at a corrupt file, a missing run or a database that is not SQLite
gets one line on stderr, ``error: <what, which file, what to do>``, and exit status 2. The
Python traceback is for developers: it is printed only with ``--debug`` (accepted anywhere on
the command line by every command that goes through :func:`run`).

Usage (at the bottom of a CLI module)::

    if __name__ == "__main__":
        raise SystemExit(cli.run(main))

``main(argv)`` keeps returning its own exit codes for the outcomes it handles itself.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Sequence

USER_ERROR_EXIT = 2
DEBUG_FLAG = "--debug"


class CLIError(Exception):
    """A user error with a complete message (what, which file, what to do); exit status 2."""


# Failures whose message is already written for the user (ours subclass these: RegistryError
# and DataError are RuntimeErrors, UploadError and InvalidParamsError are ValueErrors).
USER_ERRORS: tuple[type[BaseException], ...] = (CLIError, ValueError, OSError, RuntimeError)


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line, without object reprs' memory addresses."""
    text = str(exc).strip() or type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines)


def run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)`` and turn any exception into ``error: …`` on stderr and exit 2.

    Args:
        main: the command's ``main(argv) -> int``.
        argv: the arguments (default ``sys.argv[1:]``); ``--debug`` is removed before ``main``
            sees them and makes exceptions propagate with their traceback.

    Returns:
        ``main``'s exit status, 2 after a user error, 130 after Ctrl-C.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in args
    args = [a for a in args if a != DEBUG_FLAG]
    try:
        return main(args)
    except SystemExit:
        raise  # argparse's own usage errors (exit 2) and explicit exits
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the whole point: no traceback for users
        if debug:
            traceback.print_exc()
        elif isinstance(exc, USER_ERRORS):
            print(f"error: {_one_line(exc)}", file=sys.stderr)
        else:
            # not a failure we anticipated: still one line, but say how to see more
            print(
                f"error: {_one_line(exc)} ({type(exc).__name__}; run again with {DEBUG_FLAG} "
                "for the traceback)",
                file=sys.stderr,
            )
        return USER_ERROR_EXIT
