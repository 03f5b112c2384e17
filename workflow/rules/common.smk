import os

# Helpers: the list of runs and attacks the config asks for, and each run's biofa config.

RESULTS = config["results"]
DATA_ROOT = config["data_root"]
KEYS = "{dataset}/{model}/{optimizer}/{method}/seed{seed}"
RUN = f"{RESULTS}/runs/{KEYS}"
ATTACK_CSV = f"{RESULTS}/attacks/{KEYS}/{{attack}}-{{gradient}}.csv"
ATTACK_NAMES = ("fgsm", "pgd", "tpgd", "apgd", "square", "onepixel", "transfer")


wildcard_constraints:
    seed=r"\d+",
    method="|".join(("bp", "fa", "dfa", "usf", "brsf", "frsf", "kp")),
    attack="|".join(ATTACK_NAMES),
    gradient="feedback|true|none|transfer",


def runs():
    """Every training run of the config: dicts of the five wildcards."""
    for experiment in config["experiments"]:
        for model in experiment["models"]:
            for opt_key, opt in experiment["optimizers"].items():
                if model not in opt.get("models", [model]):
                    continue
                for method in experiment["methods"]:
                    if method not in opt.get("methods", [method]):
                        continue
                    for seed in experiment["seeds"]:
                        yield dict(dataset=experiment["dataset"], model=model,
                                   optimizer=opt_key, method=method, seed=seed)


def experiment_of(wildcards):
    for experiment in config["experiments"]:
        if experiment["dataset"] == wildcards.dataset and wildcards.model in experiment["models"] \
                and wildcards.optimizer in experiment["optimizers"]:
            return experiment
    raise ValueError(f"no experiment in the config trains {wildcards.dataset}/{wildcards.model}/"
                     f"{wildcards.optimizer}")


def run_dir(wildcards, output):
    """The run folder of a job, from its first output (a file inside the folder)."""
    return os.path.dirname(output[0])


def resource(section, key, default):
    return lambda wildcards: section(wildcards).get("resources", {}).get(key, default)


def run_config(wildcards):
    """The biofa run config of one run (validated by the run_config rule)."""
    experiment = experiment_of(wildcards)
    opt = dict(experiment["optimizers"][wildcards.optimizer])
    opt.pop("methods", None), opt.pop("models", None)
    lr = opt["lr"]
    opt["lr"] = lr.get(wildcards.method, lr["default"]) if isinstance(lr, dict) else lr
    threads = experiment.get("resources", {}).get("threads", 1)
    return {
        "dataset": wildcards.dataset, "data_root": DATA_ROOT, "model": wildcards.model,
        "method": wildcards.method, "optimizer": opt,
        "schedule": experiment.get("schedule", {"name": "constant"}),
        "layer": experiment.get("layer", {}), "epochs": experiment["epochs"],
        "batch_size": experiment["batch_size"], "seed": int(wildcards.seed),
        "device": config["device"], "threads": threads, **experiment.get("run", {}),
    }


def run_dirs():
    return [RUN.format(**run) for run in runs()]


def attack_plan():
    """(attack, gradient) pairs the config asks for, with their command-line arguments."""
    section = config.get("attacks", {})
    white = section.get("white_box", {})
    eps = lambda values: ",".join(f"{v:g}" for v in values)
    plan = {}
    for attack in white.get("attacks", []):
        for gradient in white.get("gradients", ["feedback", "true"]):
            plan[attack, gradient] = f"--eps {eps(white['eps'])} --steps {white.get('steps', 10)}"
    if section.get("square", {}).get("eps"):
        plan["square", "none"] = (f"--eps {eps(section['square']['eps'])} "
                                  f"--queries {section['square'].get('queries', 50)}")
    if section.get("onepixel", {}).get("pixels"):
        plan["onepixel", "none"] = f"--pixels {eps(section['onepixel']['pixels'])}"
    if section.get("transfer", {}).get("eps"):
        plan["transfer", "transfer"] = (f"--eps {eps(section['transfer']['eps'])} "
                                        f"--steps {white.get('steps', 10)}")
    return plan


def attack_csvs():
    targets = config.get("attacks", {}).get("targets", [])
    wanted = {(t["dataset"], t["model"], t["optimizer"]) for t in targets}
    return [ATTACK_CSV.format(**run, attack=attack, gradient=gradient)
            for run in runs() if (run["dataset"], run["model"], run["optimizer"]) in wanted
            for attack, gradient in attack_plan()]


def attack_section(wildcards):
    return config.get("attacks", {})


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
