"""tests/cluster: the standalone-cluster helper module sits beside the tests (the `standalone`
fixture itself is in tests/conftest.py, shared with tests/faults)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
