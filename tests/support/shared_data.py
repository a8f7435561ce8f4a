"""Where the project's shared reference data lives: ``shared/`` beside the repository (never inside it).

CI clones the repository with ``shared/`` beside it; ``CALCINOSIS_SHARED_DIR`` points elsewhere when needed.
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED_DIR = Path(os.environ.get("CALCINOSIS_SHARED_DIR", Path(__file__).resolve().parents[3] / "shared"))
SYNTHEA_DIR = Path(os.environ.get("CALCINOSIS_SYNTHEA_DIR", SHARED_DIR / "data" / "synthea"))
SANDBOX_JWKS_FILE = SHARED_DIR / "data" / "cds-hooks-sandbox-jwks.json"
