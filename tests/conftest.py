"""Shared by every test module: pytest puts this folder on ``sys.path`` for the conftest,
so the helpers beside it (``run_configs``, ``snakemake_runs``) import from any subfolder."""
