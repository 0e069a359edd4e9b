"""Example pyterum transformations bundled with the sidecar (run them as scripts).

`passthrough.py` is the one the local demo runs next to the sidecar.
"""

from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent
PASSTHROUGH = EXAMPLES_DIR / "passthrough.py"
