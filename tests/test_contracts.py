"""proto/ is the single source of truth: the committed stubs must be exactly
what the generator makes of it."""

from __future__ import annotations

import subprocess
import sys

from tests.harness import REPO


def test_generated_stubs_match_proto() -> None:
    result = subprocess.run(
        [sys.executable, "tools/generate_protos.py", "--check"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"stubs are stale; run `make proto`:\n{result.stdout}{result.stderr}"
