"""bench/ceiling.py's own parts: medians over the undisturbed rounds, and the CPU time of a process tree from /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from ceiling import Cell, markdown_table, medians  # noqa: E402
from procs import process_tree, tree_cpu_seconds  # noqa: E402


def _cell(workers: int, rps: float, other_cores: float, round_: int) -> Cell:
    return Cell(str(workers), workers, "foregroundMatting", 2.0, 8, 48, [], rps, 0.3, 0.07, 1.8, 0.1, other_cores, round=round_)


def test_medians_leave_out_rounds_that_something_else_disturbed():
    cells = [_cell(1, 20.0, 0.0, 0), _cell(1, 22.0, 0.1, 1), _cell(1, 9.0, 1.2, 2),
             _cell(2, 25.0, 0.05, 0), _cell(2, 11.0, 1.1, 1), _cell(2, 12.0, 1.3, 2)]
    one, two = medians(cells, max_other_cores=0.2)
    assert (one.requests_per_s, one.round) == (21.0, 2)
    assert (two.requests_per_s, two.round) == (25.0, 1)
    assert "| foregroundMatting | 2 | 2 | 1 | 25.00 | 1.19 |" in markdown_table([one, two])


def test_medians_fall_back_to_every_round_when_all_were_disturbed():
    (only,) = medians([_cell(1, 9.0, 1.2, 0), _cell(1, 11.0, 1.0, 1)], max_other_cores=0.2)
    assert (only.requests_per_s, only.round) == (10.0, 2)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_the_process_tree_and_its_cpu_time_include_the_children():
    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass\ntime.sleep(30)"
    parent = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {spin!r}]); time.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (len(process_tree(parent.pid)) < 2 or tree_cpu_seconds(process_tree(parent.pid)) < 0.5):
            time.sleep(0.1)
        tree = process_tree(parent.pid)
        assert tree[0] == parent.pid and len(tree) == 2
        assert tree_cpu_seconds(tree) >= 0.5  # the child's spin
    finally:
        for pid in process_tree(parent.pid)[::-1]:
            os.kill(pid, signal.SIGTERM)
        parent.wait(timeout=10)
