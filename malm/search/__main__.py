"""``python -m malm.search index|search|serve ...``: these commands without the rest of ``malm``."""

import sys

from malm.search.cli import main

sys.exit(main())
