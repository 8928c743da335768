"""One error policy for every ``python -m core.…`` command.

A user who points a command at a corrupt file, a missing run or a database that is not SQLite
gets one line on stderr, ``error: <what, which file, what to do>``, and exit status 2. The
Python traceback is for developers: it is printed only with ``--debug`` (accepted anywhere on
the command line by every command that goes through :func:`run`).

Usage (at the bottom of a CLI module)::

    parser = cli.ArgumentParser(prog="python -m core.x", description=__doc__)
    ...
    if __name__ == "__main__":
        raise SystemExit(cli.run(main))

``main(argv)`` keeps returning its own exit codes for the outcomes it handles itself; for a user
error it raises (``CLIError`` or one of the project's errors) and :func:`run` reports it.
"""

from __future__ import annotations

import argparse
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

USER_ERROR_EXIT = 2
DEBUG_FLAG = "--debug"


class CLIError(Exception):
    """A user error with a complete message (what, which file, what to do); exit status 2."""


# Failures whose message is already written for the user (ours subclass these: RegistryError
# and DataError are RuntimeErrors, UploadError and InvalidParamsError are ValueErrors).
USER_ERRORS: tuple[type[BaseException], ...] = (CLIError, ValueError, OSError, RuntimeError)

_ADDRESS = re.compile(r" at 0x[0-9A-Fa-f]+")


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors follow the same one-line policy.

    Plain argparse prints the whole usage block and ``prog: error: …``; this prints
    ``error: <problem> (run `<prog> --help` …)`` and exits with status 2. Sub-command parsers
    made by ``add_subparsers().add_parser`` are of this class too.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # only documented here: run() takes the flag out before main() parses the arguments
        self.add_argument(
            DEBUG_FLAG, action="store_true", help="on an error, also print the Python traceback"
        )

    def error(self, message: str) -> NoReturn:
        """Print the one-line usage error and exit with status 2."""
        self.exit(
            USER_ERROR_EXIT,
            f"error: {_one_line(message)} (run `{self.prog} --help` for the usage)\n",
        )


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type=`` for integers ``>= minimum``.

    Args:
        minimum: the smallest accepted value.

    Returns:
        A converter raising ``argparse.ArgumentTypeError`` (argparse then reports ``error:
        argument --x: …`` in one line) for anything else.
    """

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= {minimum}")
        return value

    convert.__name__ = f"integer >= {minimum}"
    return convert


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def check_run(run_dir: str) -> Path:
    """Refuse a run a long command cannot use, in a second and before TensorFlow starts work.

    Checks that the run exists, that its ``metrics.json`` and ``config.json`` are readable and
    valid, and that its dataset file is present and published (MD5) under ``MEDMNIST_ROOT``.

    Args:
        run_dir: a run name in the registry or the path of a run directory.

    Returns:
        The run's resolved directory.

    Raises:
        core.registry.RegistryError: no run there or a damaged file (the message names it).
        core.data.DataError: the dataset file is missing or altered.
    """
    from core import data, registry

    path = registry.resolve_run(run_dir, allow_outside=True)
    registry.read_json(path, "metrics.json")
    cfg = registry.read_config(path)
    data.ensure_file(cfg.dataset, cfg.size, download=False)
    return path


def _one_line(exc: BaseException | str) -> str:
    """The message on one line (numbered steps joined), without objects' memory addresses."""
    text = str(exc).strip() or type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return _ADDRESS.sub("", " ".join(lines))


def message(exc: BaseException) -> str:
    """The ``error: …`` line :func:`run` prints for ``exc``.

    Args:
        exc: the exception ``main`` raised.

    Returns:
        One line: the message of a user error as it is; for anything else, also its type and how
        to see the traceback (it is then most likely a bug, which the line says).
    """
    if isinstance(exc, USER_ERRORS):
        return f"error: {_one_line(exc)}"
    return (
        f"error: unexpected {type(exc).__name__}: {_one_line(exc)} (probably a bug; run again "
        f"with {DEBUG_FLAG} for the traceback and report it)"
    )


def run(
    main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None
) -> int:
    """Call ``main(argv)`` and turn any exception into ``error: …`` on stderr and exit 2.

    Args:
        main: the command's ``main(argv) -> int`` (``None`` counts as 0).
        argv: the arguments (default ``sys.argv[1:]``); ``--debug`` is removed before ``main``
            sees them and makes :func:`run` print the traceback before the ``error:`` line.

    Returns:
        ``main``'s exit status, 2 after a user error, 130 after Ctrl-C.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in args
    args = [a for a in args if a != DEBUG_FLAG]
    try:
        status = main(args)
    except SystemExit:
        raise  # argparse's own usage errors (exit 2) and explicit exits
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the whole point: no traceback for users
        if debug:
            traceback.print_exc()
        # last, so the final line of stderr is the message whatever was logged before it
        print(message(exc), file=sys.stderr, flush=True)
        return USER_ERROR_EXIT
    return 0 if status is None else status
