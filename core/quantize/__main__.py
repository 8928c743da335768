"""``python -m core.quantize RUN_DIR``."""

from core import cli
from core.quantize.compare import main

raise SystemExit(cli.run(main))
