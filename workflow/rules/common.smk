import os

import yaml

from biofa.methods import INITS, METHODS
from biofa.study.names import (
    ATTACKS,
    ATTACK_TABLE,
    FIGURE_FORMATS,
    FIGURE_NAMES,
    FIGURE_TABLES,
    FIXED_THREAT_MODEL,
    GRADIENTS,
    REFERENCE_FIGURES,
    RUN_FOLDER,
    RUN_TABLES,
    THREAT_MODELS,
    TRANSFER_GRADIENT,
    TRANSFER_SOURCE,
    multi_init_settings,
    study_figures,
)
from biofa.study.attack import plan as plan_attacks
from biofa.study.attack import plan_files
from biofa.study.config import validate as validate_run
from biofa.study.run import RunFolder
from biofa.study.study_config import experiment_index, is_target, launcher, run_key
from biofa.study.study_config import runs as study_runs
from biofa.study.study_config import run_config as study_run_config

# Helpers: the runs and attacks the config asks for, and each run's biofa config. Every
# name (methods, attacks, threat models, figures, a run folder's files, the tables) comes
# from biofa, so the commands and the workflow cannot disagree about one.
# The config is validated and its defaults filled (biofa.study.study_config) before this file runs.

RESULTS = config["results"]
DATA_ROOT = config["data_root"]
RUN = f"{RESULTS}/runs/{RUN_FOLDER}"
ATTACK_DIR = f"{RESULTS}/attacks/{RUN_FOLDER}"
ATTACK_CSV = f"{ATTACK_DIR}/{{attack}}-{{gradient}}.csv"
TABLES = f"{RESULTS}/tables"
FIGURE = f"{RESULTS}/figures/{{figure}}"


wildcard_constraints:
    seed=r"\d+",
    init="|".join(INITS),
    method="|".join(METHODS),
    attack="|".join(ATTACKS),
    gradient="|".join(THREAT_MODELS),
    figure="|".join(FIGURE_NAMES),


def table(name):
    """The path of one collected table (biofa report collect / attacks)."""
    return f"{TABLES}/{name}.csv"


def runs():
    """Every training run of the config: dicts of the six wildcards."""
    return study_runs(config)


# run key -> the experiment producing it; from the same function as runs(), so a job
# always gets the epochs, learning rate, schedule and resources of its own experiment
EXPERIMENT_OF = experiment_index(config)


def experiment_of(wildcards):
    key = run_key(wildcards)
    if key not in EXPERIMENT_OF:
        raise ValueError(f"no experiment in the config trains {'/'.join(key)}")
    return config["experiments"][EXPERIMENT_OF[key]]


def run_dir(wildcards, output):
    """The run folder of a job, from its first output (a file inside the folder)."""
    return os.path.dirname(output[0])


def resource(section, key, default):
    return lambda wildcards: section(wildcards).get("resources", {}).get(key, default)


def train_gpus(wildcards):
    """The GPUs of a train job: per node, times its nodes."""
    resources = experiment_of(wildcards).get("resources", {})
    return resources.get("gpu", 0) * resources.get("nodes", 1)


def train_launcher(wildcards):
    """What starts biofa train: nothing, torchrun (processes > 1), or srun (nodes > 1)."""
    return launcher(experiment_of(wildcards).get("resources", {}))


def run_config(wildcards):
    """The biofa run config of one run, validated and with biofa's defaults filled."""
    return validate_run(study_run_config(config, experiment_of(wildcards), wildcards))


def run_config_yaml(wildcards):
    return yaml.safe_dump(run_config(wildcards), sort_keys=False)


def run_dirs():
    return [RUN.format(**run) for run in runs()]


def run_targets():
    """The weights and test result of every run (a deleted one is made again)."""
    return [
        f"{run}/{name}"
        for run in run_dirs()
        for name in (RunFolder.BEST, RunFolder.evaluation("test"))
    ]


def run_file(name):
    """One file of every run folder, as rule inputs (the config's runs, not a glob)."""
    return [f"{run}/{name}" for run in run_dirs()]


def attack_plan():
    """(attack, gradient) pairs the config asks for: biofa's plan of the attacks section,
    the one ``biofa attack --plan`` runs."""
    return plan_attacks(config["attacks"])


def attack_plan_yaml(wildcards):
    return yaml.safe_dump({"attacks": config["attacks"]}, sort_keys=False)


def attacked_runs():
    """The runs of the config's attack targets."""
    targets = config["attacks"]["targets"]
    return [run for run in runs() if any(is_target(target, run) for target in targets)]


def attack_csvs():
    return [
        ATTACK_CSV.format(**run, attack=attack, gradient=gradient)
        for run in attacked_runs()
        for attack, gradient in attack_plan()
    ]


def run_attack_csvs():
    """The CSVs one attack job writes into its run's attack folder, as biofa names them."""
    return [f"{ATTACK_DIR}/{name}" for name in plan_files(config["attacks"])]


def attack_section(wildcards):
    return config["attacks"]


def transfer_run(wildcards):
    """Transfer attacks craft their examples on the bp run of the same data, model, optimizer,
    init and seed."""
    return RUN.format(**{**wildcards, "method": TRANSFER_SOURCE})


def transfer_source(wildcards):
    """The bp run's weights, for a plan with transfer attacks."""
    if not any(gradient == TRANSFER_GRADIENT for _, gradient in attack_plan()):
        return []
    return f"{transfer_run(wildcards)}/{RunFolder.BEST}"


def source_option(wildcards, input):
    return f"--source {os.path.dirname(input.source)}" if input.source else ""


def figures():
    """The figures this study has data for (biofa decides from the runs and the attacks),
    so the DAG, rule all and the report show no empty figure."""
    attacked = (
        {attack for attack, gradient in attack_plan()} if attack_csvs() else set()
    )
    return study_figures({run["method"] for run in runs()}, attacked, runs())


def init_tables():
    """The initialization table, for a study that trains a setting from several inits."""
    if not multi_init_settings(runs()):
        return []
    return expand(f"{TABLES}/init_table.{{ext}}", ext=("csv", "md", "tex"))


def figure_files():
    return expand(f"{FIGURE}.{{ext}}", figure=figures(), ext=FIGURE_FORMATS)


# The published numbers the tables and figures are compared with. They belong to the
# workflow, not to a study's config, so they are found next to this file: that also holds
# when the workflow is a module of another repository and the working directory is not
# this checkout.
PUBLISHED = {
    name: workflow.source_path(f"../../config/reference/{name}.csv")
    for name in ("paper_results", "paper_robustness")
}


def figure_table(wildcards):
    return table(FIGURE_TABLES[wildcards.figure])


def figure_reference(wildcards):
    """The published robustness, drawn as stars, for the figures that show it."""
    if wildcards.figure in REFERENCE_FIGURES:
        return PUBLISHED["paper_robustness"]
    return []
