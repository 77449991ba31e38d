"""``python -m aln``."""

import sys

from aln.cli import main

sys.exit(main())
