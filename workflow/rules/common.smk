import os

from biofa.study.names import ATTACKS, GRADIENTS
from biofa.methods import METHODS
from biofa.study.study_config import experiment_index, experiment_runs, run_config as study_run_config
from biofa.study.study_config import run_key

# Helpers: the list of runs and attacks the config asks for, and each run's biofa config.
# The config is validated and its defaults filled (biofa.study.study_config) before this file runs.

RESULTS = config["results"]
DATA_ROOT = config["data_root"]
KEYS = "{dataset}/{model}/{optimizer}/{method}/seed{seed}"
RUN = f"{RESULTS}/runs/{KEYS}"
ATTACK_CSV = f"{RESULTS}/attacks/{KEYS}/{{attack}}-{{gradient}}.csv"


wildcard_constraints:
    seed=r"\d+",
    method="|".join(METHODS),
    attack="|".join(ATTACKS),
    gradient="|".join((*GRADIENTS, "none", "transfer")),


def runs():
    """Every training run of the config: dicts of the five wildcards."""
    for index in range(len(config["experiments"])):
        yield from experiment_runs(config, index)


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


def run_config(wildcards):
    """The biofa run config of one run (validated by the run_config rule)."""
    return study_run_config(config, experiment_of(wildcards), wildcards)


def run_dirs():
    return [RUN.format(**run) for run in runs()]


def attack_plan():
    """(attack, gradient) pairs the config asks for, with their command-line arguments."""
    section = config["attacks"]
    white = section["white_box"]
    eps = lambda values: ",".join(f"{v:g}" for v in values)
    plan = {}
    for attack in white["attacks"]:
        for gradient in white["gradients"]:
            plan[attack, gradient] = f"--eps {eps(white['eps'])} --steps {white['steps']}"
    if section["square"].get("eps"):
        plan["square", "none"] = (f"--eps {eps(section['square']['eps'])} "
                                  f"--queries {section['square']['queries']}")
    if section["onepixel"].get("pixels"):
        plan["onepixel", "none"] = f"--pixels {eps(section['onepixel']['pixels'])}"
    if section["transfer"].get("eps"):
        plan["transfer", "transfer"] = (f"--eps {eps(section['transfer']['eps'])} "
                                        f"--steps {white['steps']}")
    return plan


def attack_csvs():
    targets = config["attacks"]["targets"]
    wanted = {(t["dataset"], t["model"], t["optimizer"]) for t in targets}
    return [ATTACK_CSV.format(**run, attack=attack, gradient=gradient)
            for run in runs() if (run["dataset"], run["model"], run["optimizer"]) in wanted
            for attack, gradient in attack_plan()]


def attack_section(wildcards):
    return config["attacks"]


def transfer_source(wildcards):
    """Transfer attacks craft their examples on the bp run of the same data, model and seed."""
    if wildcards.attack != "transfer":
        return []
    return f"{RUN.format(**{**wildcards, 'method': 'bp'})}/best.pt"


def attack_arguments(wildcards):
    arguments = attack_plan()[wildcards.attack, wildcards.gradient]
    if wildcards.gradient in ("feedback", "true"):
        arguments += f" --gradient {wildcards.gradient}"
    if wildcards.attack == "transfer":
        arguments += f" --source {RUN.format(**{**wildcards, 'method': 'bp'})}"
    return arguments
