"""``python -m core.jobs``: the worker, the job child and the queue commands (see ``commands``).

Log records of ``core.jobs.*`` are printed to stdout as bare messages, the way these commands
printed them before they used ``logging``: the worker's stdout is its ``<db>.worker.log`` and a
job child's stdout is the job log the Retrain page shows.
"""

from __future__ import annotations

import logging
import sys

from core import cli
from core.jobs.commands import main


def log_to_stdout() -> None:
    """Send ``core.jobs`` log records (INFO and up) to stdout, one bare message per line."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("core.jobs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # TensorFlow/absl may configure the root logger in the child


if __name__ == "__main__":
    log_to_stdout()
    raise SystemExit(cli.run(main))
