"""Progress on a terminal, none under --quiet or in a log (stderr not a terminal)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

CUREFLOW = str(Path(sys.executable).parent / "cureflow")


def _on_a_terminal(args: list[str]) -> str:
    """Run the command with stdout and stderr on a pseudo-terminal; everything it wrote."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec the command on the terminal
        os.environ.pop("CUREFLOW_QUIET", None)
        os.execv(CUREFLOW, [CUREFLOW, *args])
    chunks = []
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.skipif(not hasattr(pty, "fork"), reason="needs a pseudo-terminal")
def test_a_long_step_shows_progress_on_a_terminal_and_not_under_quiet(tmp_path):
    shown = _on_a_terminal(["simulate", "--accounts", "3000", "--months", "12", "--out", str(tmp_path / "a")])
    assert "simulate: 3,000 accounts x 12 months" in shown and "simulated" in shown
    quiet = _on_a_terminal(["--quiet", "simulate", "--accounts", "3000", "--months", "12",
                            "--out", str(tmp_path / "b")])
    assert "simulate: 3,000 accounts" not in quiet and "simulated" in quiet


def test_no_progress_in_a_log(tmp_path):
    done = subprocess.run([CUREFLOW, "simulate", "--accounts", "3000", "--months", "12", "--out", str(tmp_path)],
                          capture_output=True, text=True, check=True)
    assert "simulate: 3,000 accounts" not in done.stdout + done.stderr and "simulated" in done.stdout
