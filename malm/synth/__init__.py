"""The synthetic Recipe1M stand-in (the CPU default): vocabulary tables (``vocab``), recipe text
(``text``), image rendering (``render``), the seeded plan of every recipe (``plan``) and the
writer of the Recipe1M-format files (``write``: :func:`malm.synth.write.generate`).

The generator's identity is :func:`generator_fingerprint`: :data:`GENERATOR_VERSION`, the sha256 of
the data files its tables are read from (:data:`DATA_FILES` in :data:`DATA_DIR`, through
:func:`read_data`) and of its code (``malm/synth/*.py``). A dataset written by ``generate`` is
current while its marker (``.synth_complete``) records the same output config and the same
fingerprint; otherwise ``generate`` writes it again (same config: same files, byte for byte, unless
the generator really changed). The rule for all staleness keys is in :mod:`malm.io`.

This module imports nothing heavy: the data cache and the pipeline test read it cheaply.
"""

from __future__ import annotations

from pathlib import Path

from malm.io import fingerprint_files, sha256_bytes, sha256_file

# Bump by hand when the output changes on purpose for a reason the code and data fingerprints do not
# see (e.g. a numpy or Pillow upgrade that changes the bytes, a new meaning of a SynthConfig field).
GENERATOR_VERSION = 1
CODE_DIR = Path(__file__).resolve().parent
DATA_DIR = CODE_DIR  # where read_data reads DATA_FILES from (tests point it at an edited copy)
DATA_FILES = ("ingredients.txt", "text_templates.json")
_READ: dict[str, str] = {}  # sha256 of the data files this process's tables were built from


def read_data(name: str) -> str:
    """The text of one of :data:`DATA_FILES` (from :data:`DATA_DIR`), remembering its sha256 so that
    the fingerprint describes the tables this process really uses."""
    raw = (DATA_DIR / name).read_bytes()
    _READ[name] = sha256_bytes(raw)
    return raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # as Path.read_text


def generator_fingerprint() -> dict:
    """{"version", "data": {file: sha256}, "code": {file: sha256}} of the generator: the data files
    as this process read them (as a fresh import would read them, for those not read yet) and the
    ``malm/synth/*.py`` sources on disk."""
    return {"version": GENERATOR_VERSION,
            "data": {n: _READ.get(n) or sha256_file(DATA_DIR / n) for n in DATA_FILES},
            "code": fingerprint_files(sorted(CODE_DIR.glob("*.py")), CODE_DIR)}


def generator_changes(recorded: dict | None, current: dict | None = None) -> list[str]:
    """What differs between a recorded :func:`generator_fingerprint` and ``current`` (default: now):
    ``"GENERATOR_VERSION"`` and the changed, added or removed files; ``[]`` when they are the same."""
    current = generator_fingerprint() if current is None else current
    if not isinstance(recorded, dict):
        return ["no generator fingerprint recorded"]
    out = ["GENERATOR_VERSION"] if recorded.get("version") != current["version"] else []
    for part in ("data", "code"):
        old, new = recorded.get(part) or {}, current[part]
        out += [f for f in sorted(set(old) | set(new)) if old.get(f) != new.get(f)]
    return out
