"""Shared by every test module: pytest puts this folder on ``sys.path`` for the conftest,
so the helpers beside it (``run_configs``, ``snakemake_runs``) import from any subfolder.
The ``backend`` fixture runs a test on both backends of the feedback functions."""

import pytest


@pytest.fixture(params=["compiled", "python"])
def backend(request, monkeypatch):
    """Both backends of the feedback functions: the compiled extension and the Python
    reference (the fallback); skips the compiled one where it did not build."""
    from biofa import functional  # imported by the tests that ask, not by every module

    if request.param == "compiled" and functional.backend() is functional._Python:
        pytest.skip("the compiled feedback functions did not build on this machine")
    if request.param == "python":
        monkeypatch.setattr(functional, "_backend", functional._Python)
    return request.param


@pytest.fixture
def float64():
    """torch's default dtype float64 for one test, restored afterwards."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
