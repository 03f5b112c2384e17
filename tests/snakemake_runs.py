"""Running snakemake from the long tests (the SLURM cluster test, the smoke run)."""

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest


def snakemake(cwd: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """Run snakemake in its own process group; on timeout kill the whole group (a snakemake
    that lost track of its cluster jobs ignores SIGTERM and polls forever)."""
    process = subprocess.Popen(["snakemake", *args], cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"snakemake {' '.join(args)} ran over {timeout:.0f} s:\n{output[-4000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, output)


def job_counts(output: str) -> dict:
    """Jobs per rule, from the "Job stats" table snakemake prints (without its total)."""
    table = output[output.index("Job stats:"):]
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}
    counts.pop("total", None)
    return counts
