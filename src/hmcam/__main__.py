"""``python -m hmcam``: the command line."""

import sys

from hmcam.cli import main

sys.exit(main())
