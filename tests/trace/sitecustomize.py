"""Loaded by every Python process started with this directory on PYTHONPATH (the DVC pipeline
test): at exit, write which ``malm`` source files the process imported, with its command line, to
``$MALM_TRACE_IMPORTS/<pid>.json``. The test then checks that each stage's DVC deps cover the code
it really read."""

import atexit
import json
import os
import sys

_DIR = os.environ.get("MALM_TRACE_IMPORTS")


def _write() -> None:
    files = sorted({m.__file__ for name, m in list(sys.modules.items())
                    if (name == "malm" or name.startswith("malm.")) and getattr(m, "__file__", None)})
    if files:
        with open(os.path.join(_DIR, f"{os.getpid()}.json"), "w") as f:
            json.dump({"argv": sys.argv, "files": files}, f)


if _DIR:
    atexit.register(_write)
