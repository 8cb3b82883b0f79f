"""The layers and no import circle, as the import-linter contracts in pyproject.toml state them: models/ imports
neither pipelines/ nor serving/, serving/ never imports pipelines/, pipelines/ imports serving/ only from its
command line, and no package has a circle of imports among its modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def test_imports_keep_the_layers_and_make_no_circle():
    done = subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout
