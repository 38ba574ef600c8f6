"""The soak script at a small N: events over HTTP while faults 1, 4, 5 and a MySQL outage
strike in random order (the seed is printed); nothing acknowledged is lost."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from testlib.processes import ROOT

pytestmark = pytest.mark.slow


def test_a_small_soak_run_loses_nothing_and_duplicates_nothing() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/soak.py", "--events", "2000", "--seconds", "45",
         "--outage", "8"],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    print(result.stdout)
    report = dict(re.findall(r"^(\S.*?)\s{2,}(\S.*)$", result.stdout, re.MULTILINE))

    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert report["events sent"] == report["acknowledged (202)"] == "2000"
    assert report["stored in PostgreSQL"] == report["projected into MySQL"] == "2000"
    assert report["lost (acknowledged, not stored)"] == "0"
    assert report["duplicate rows"] == "0"
    assert report["dead-lettered"] == "0"
    assert len(re.findall(r"^  t\+\d+s ", result.stdout, re.MULTILINE)) == 5, "a fault did not run"
