"""``python -m pcmeta``: the ``pcmeta`` command line (:func:`pcmeta.demos.cli.main`), same arguments and exit code."""
from __future__ import annotations

import sys

from pcmeta.demos.cli import main

if __name__ == "__main__":
    sys.exit(main())
