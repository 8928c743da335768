"""``python -m benchmarks.report``: regenerate docs/RESULTS.md (see ``build.main`` for flags)."""

import sys

from benchmarks.report.build import main

if __name__ == "__main__":
    sys.exit(main())
