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


def _bench(script: str, *args: str) -> subprocess.CompletedProcess:
    """``benchmarks/<script>`` run with ``args``, its output captured."""
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                          capture_output=True, text=True, timeout=120)


def _table_rows(stdout: str, first: str) -> tuple[list[str], list[list[str]]]:
    """The header (starting with ``first``) and the rows of a terminal table the scripts print."""
    lines = [line.split() for line in stdout.splitlines() if line.strip() and not line.startswith("#")]
    start = next(i for i, cells in enumerate(lines) if cells[:1] == [first])
    return lines[start], lines[start + 1:]


def test_imagenet_loader_prints_images_per_second_per_pipeline_and_worker_count():
    result = _bench("imagenet_loader.py", "--workers", "0,1", "--images", "8", "--batch", "4",
                    "--rounds", "1")
    assert result.returncode == 0, result.stderr
    head, rows = _table_rows(result.stdout, "pipeline")
    assert head == ["pipeline", "workers", "images/s", "min-max", "per", "worker", "per", "core",
                    "per", "CPU-s"]
    assert sorted((row[0], row[1]) for row in rows) == [
        ("pil", "0"), ("pil", "1"), ("tvio", "0"), ("tvio", "1")]
    for row in rows:
        assert all(float(cell) > 0 for cell in [row[2], *row[3].split("-"), row[4], row[5]]), row
        assert row[6] == "-" or float(row[6]) > 0  # "-" without psutil
    assert "mean" in result.stdout and "KB" in result.stdout  # the stand-in's file size


def test_data_parallel_prints_speed_up_and_ratio_to_bp_per_rule():
    result = _bench("data_parallel.py", "--methods", "dfa", "--steps", "2", "--rounds", "1",
                    "--repeats", "1")
    assert result.returncode == 0, result.stderr
    head, rows = _table_rows(result.stdout, "rule")
    assert " ".join(head) == ("rule 1-proc img/s 2-proc img/s speed-up x2 min-max efficiency x2 "
                              "vs bp @1 vs bp @2")
    assert [row[0] for row in rows] == ["bp", "dfa"]  # bp first: the ratios' reference
    for row in rows:
        assert float(row[1]) > 0 and float(row[2]) > 0
        assert float(row[3].rstrip("x")) > 0 and float(row[5].rstrip("%")) > 0
        assert all(float(cell.rstrip("x")) > 0 for cell in row[6:8])
    assert rows[0][6:8] == ["1.00x", "1.00x"]


def _refuses_cuda_without_a_gpu(script: str, message: str) -> None:
    import torch

    if not torch.cuda.is_available():  # with a GPU there is nothing to refuse
        result = _bench(script, "--device", "cuda")
        assert result.returncode == 2 and message in result.stderr


def test_imagenet_loader_refuses_cuda_without_a_gpu():
    _refuses_cuda_without_a_gpu("imagenet_loader.py", "torch.cuda.is_available() is False")


def test_data_parallel_refuses_cuda_without_a_gpu():
    _refuses_cuda_without_a_gpu("data_parallel.py", "no GPU")


def test_data_parallel_names_an_unknown_rule():
    result = _bench("data_parallel.py", "--methods", "fb")
    assert result.returncode == 2 and "unknown method 'fb'" in result.stderr
