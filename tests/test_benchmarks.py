"""The step-time benchmark runs end to end and prints ratios that make sense."""

import math
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_step_time_prints_a_ratio_per_method_and_where_the_time_goes():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "step_time.py"), "--models", "lenet_mnist",
         "--methods", "bp,fa,brsf", "--rounds", "3", "--steps", "2", "--no-biotorch",
         "--device", "cpu", "--phases"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    row = next(line for line in lines if line.split()[:4] == ["lenet_mnist", "cpu", "64", "biofa"])
    ratios = [float(cell) for cell in re.findall(r"([\d.]+)x", row)]
    assert len(ratios) == 3 and all(0.5 < r < 2.0 for r in ratios)  # bp, fa, brsf vs torch
    phase_rows = {line.split()[2]: line.split() for line in lines
                  if line.startswith("lenet_mnist") and len(line.split()) == 7}
    assert set(phase_rows) == {"torch", "bp", "fa", "brsf"}
    for cells in phase_rows.values():
        assert all(float(us) > 0 for us in cells[3:6])  # forward, backward, step in us
    assert phase_rows["torch"][6] == "+0/+0/+0"


def test_step_time_compile_adds_compiled_rows_against_the_compiled_torch_model():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "step_time.py"), "--models", "lenet_mnist",
         "--methods", "bp,fa", "--rounds", "1", "--steps", "1", "--no-biotorch",
         "--device", "cpu", "--compile", "--compile-backend", "aot_eager"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = {line.split()[4]: line.split() for line in lines
            if line.split()[:4] == ["lenet_mnist", "cpu", "64", "biofa"]}
    assert set(rows) == {"eager", "compiled"}
    for mode, cells in rows.items():
        ratios = [float(cell) for cell in re.findall(r"([\d.]+)x", " ".join(cells[6:8]))]
        # one timed step each: finite and positive, no tighter (a busy machine moves them)
        assert len(ratios) == 2 and all(math.isfinite(r) and r > 0 for r in ratios), cells
    assert rows["eager"][8] == "-" and float(rows["compiled"][8].rstrip("x")) > 0
    compile_row = next(line.split() for line in lines
                       if line.split()[:2] == ["lenet_mnist", "cpu"] and len(line.split()) == 5)
    assert all(float(s) >= 0 for s in compile_row[2:])  # compile seconds: torch, bp, fa
    assert "warning" not in result.stdout  # no recompiles during the timed rounds


def test_step_time_names_an_unknown_method():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "step_time.py"), "--methods", "fb"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "unknown method 'fb'" in result.stderr
