"""``python -m virtlib.guest build [--rebuild] [--cache-dir D]``."""

import sys

from virtlib.guest.cli import main

sys.exit(main())
