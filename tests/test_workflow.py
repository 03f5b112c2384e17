"""The Snakemake workflow: the paper's DAG, config validation, and a small study end to end."""

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from biofa.methods import METHODS
from biofa.study import names
from biofa.study.run import RunFolder
from biofa.study import study_config
from biofa.study.attack import plan as attack_plan

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = [ROOT / "workflow" / "Snakefile", *sorted((ROOT / "workflow").rglob("*.smk"))]


def snakemake(cwd, *args, timeout=900):
    return subprocess.run(["snakemake", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def job_counts(output: str) -> dict:
    """Parse snakemake's 'Job stats' table."""
    table = output[output.index("Job stats:"):]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def planned_jobs(output: str) -> list[dict]:
    """The jobs of a dry run (-n): rule, wildcards, input and output files of each."""
    jobs = []
    for block in re.split(r"\n\s*\n", output):
        rule = re.search(r"^(?:local)?rule (\w+):$", block, re.M)
        if not rule:
            continue
        fields = dict(re.findall(r"^\s{4}(input|output|wildcards): (.*)$", block, re.M))
        files = {k: [f.removesuffix(" (cached)") for f in fields.get(k, "").split(", ") if f]
                 for k in ("input", "output")}
        wildcards = dict(w.split("=", 1) for w in fields.get("wildcards", "").split(", ") if w)
        jobs.append({"rule": rule.group(1), "wildcards": wildcards, **files})
    return jobs


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the workflow and configs, with a smaller version of the default study."""
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(ROOT / "workflow", root / "workflow")
    shutil.copytree(ROOT / "config", root / "config")
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    experiment = config["experiments"][0]
    experiment.update(methods=["bp", "fa"], seeds=[0], epochs=2,
                      schedule={"name": "multistep", "milestones": [1], "gamma": 0.1})
    experiment["optimizers"]["sgd"]["lr"] = {"default": 0.01, "fa": 0.001}  # only its methods
    experiment["optimizers"] = {"sgd": experiment["optimizers"]["sgd"]}  # SGD alone
    config["attacks"]["n_images"] = 60
    (root / "config" / "small.yaml").write_text(yaml.safe_dump(config))
    return root


#: The small study's figures: bp and fa, PGD, Square and transfer, no OnePixel.
#: (one init, so no initialization figure either)
SMALL_STUDY_FIGURES = [name for name in names.FIGURE_NAMES
                       if name not in ("onepixel", "initialization")]


def planned_figures(cwd, configfile) -> list[str]:
    result = snakemake(cwd, "-n", "--configfile", configfile)
    assert result.returncode == 0, result.stderr[-3000:]
    return sorted(job["wildcards"]["figure"] for job in planned_jobs(result.stdout)
                  if job["rule"] == "figure")


def test_only_figures_with_data_are_planned(project):
    """A study without OnePixel results makes no OnePixel figure (nor lists one in its
    report); asking for OnePixel strengths brings the figure back."""
    assert planned_figures(project, "config/config.yaml") == sorted(SMALL_STUDY_FIGURES)
    config = yaml.safe_load((project / "config" / "small.yaml").read_text())
    config["attacks"]["onepixel"]["pixels"] = [1]
    (project / "config" / "onepixel.yaml").write_text(yaml.safe_dump(config))
    assert planned_figures(project, "config/onepixel.yaml") == sorted(
        set(names.FIGURE_NAMES) - {"initialization"})
    config["experiments"][0]["layer"]["init"] = ["xavier", "kaiming"]  # an init study
    (project / "config" / "inits.yaml").write_text(yaml.safe_dump(config))
    assert planned_figures(project, "config/inits.yaml") == sorted(names.FIGURE_NAMES)
    config["experiments"][0]["layer"]["init"] = "xavier"
    config["attacks"]["targets"] = []  # nothing attacked: no attack figure at all
    (project / "config" / "no_attacks.yaml").write_text(yaml.safe_dump(config))
    assert planned_figures(project, "config/no_attacks.yaml") == sorted(
        ["training", "alignment", "alignment_layers", "alignment_per_layer"])


def test_paper_config_lists_every_training_run():
    result = snakemake(ROOT, "-n", "--configfile", "config/paper.yaml")
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    # MNIST and Fashion-MNIST LeNet (10 + 10), CIFAR-10 LeNet/ResNet-20/ResNet-56 x SGD/Adam
    # (60): every method of the paper plus kp, wm, drtp and dkp, seed 2021; ImageNet ResNet-18
    # (7: the paper's and kp); and the initialization study: CIFAR-10 LeNet/ResNet-20 x
    # SGD/Adam x 10 methods from two more inits (80). Each train job also tests its run.
    assert counts["train"] == 87 + 80 and counts["data"] == 4 and "evaluate" not in counts
    assert counts["init_table"] == 1
    # ResNet-20 SGD xavier: one job per method, each writing 4 white-box attacks and
    # AutoAttack x 2 gradients + square + onepixel + transfer
    assert counts["attack"] == 10
    attacks = [job for job in planned_jobs(result.stdout) if job["rule"] == "attack"]
    assert sum(len(job["output"]) for job in attacks) == 10 * 13
    assert all("/resnet20/sgd/xavier/" in job["output"][0] for job in attacks)


def test_extensions_study_trains_every_rule_and_runs_autoattack_in_its_own_folder():
    """config/extensions.yaml: valid against the schema file too, every registered rule
    trained on LeNet with tanh and on the quick study's ReLU LeNet, the tanh models attacked
    with PGD and AutoAttack under both gradients, its own results folder."""
    import jsonschema

    raw = yaml.safe_load((ROOT / "config" / "extensions.yaml").read_text())
    config = study_config.validate_study(raw)
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    jsonschema.Draft202012Validator(schema).validate(raw)
    tanh, relu = config["experiments"]
    assert (tanh["models"], relu["models"]) == (["lenet_mnist_tanh"], ["lenet_mnist"])
    quick = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    assert config["results"] != quick["results"]
    for experiment in (tanh, relu):
        assert set(experiment["methods"]) == set(METHODS)
        for key in ("dataset", "epochs", "batch_size", "schedule", "layer"):
            assert experiment[key] == quick["experiments"][0][key], key
    assert relu["models"] == quick["experiments"][0]["models"]
    assert [(t["model"], t["optimizer"]) for t in config["attacks"]["targets"]] == [
        ("lenet_mnist_tanh", "sgd")]

    # every job, whatever an earlier run of the study left in its results folder
    result = snakemake(ROOT, "-n", "--forceall", "--configfile", "config/extensions.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = planned_jobs(result.stdout)
    runs = len(METHODS) * len(tanh["seeds"])
    trained = [job["wildcards"]["model"] for job in jobs if job["rule"] == "train"]
    assert sorted(trained) == ["lenet_mnist"] * runs + ["lenet_mnist_tanh"] * runs
    attacks = [job for job in jobs if job["rule"] == "attack"]
    assert len(attacks) == runs
    for job in attacks:
        assert job["wildcards"]["model"] == "lenet_mnist_tanh"
        assert [Path(f).name for f in job["output"]] == [
            "pgd-feedback.csv", "pgd-true.csv", "autoattack-feedback.csv", "autoattack-true.csv"]
    figures = sorted(job["wildcards"]["figure"] for job in jobs if job["rule"] == "figure")
    assert figures == sorted(["training", "alignment", "alignment_layers", "alignment_per_layer",
                              "robustness"])
    assert any(job["rule"] == "error_table" for job in jobs)
    outputs = [f for job in jobs for f in job["output"]]
    assert outputs and all(f.startswith(config["results"] + "/") for f in outputs
                           if f.startswith("results"))


@pytest.mark.parametrize("change, message", [
    (lambda c: c["experiments"][0]["methods"].append("fb"),
     "config key 'experiments[0].methods[7]': got \"fb\"; allowed: one of bp,"),
    (lambda c: c["experiments"][0].pop("epochs"), "config key 'experiments[0].epochs' is missing"),
    (lambda c: c["experiments"][0].update(learning_rate=0.1),
     "unknown config key 'experiments[0].learning_rate'"),
    (lambda c: c["experiments"][0]["optimizers"]["sgd"]["lr"].update(fa=-1),
     "config key 'experiments[0].optimizers.sgd.lr.fa': got -1; allowed: a number > 0"),
])
def test_bad_config_fails_at_validation_naming_the_key(project, change, message):
    """biofa's study checks run first: snakemake stops with their one line, writing nothing."""
    config = yaml.safe_load((project / "config" / "config.yaml").read_text())
    change(config)
    bad = project / "config" / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    results = project / "results"
    before = results.exists() and sorted(results.rglob("*"))
    result = snakemake(project, "-n", "--configfile", str(bad))
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert (results.exists() and sorted(results.rglob("*"))) == before


def test_experiments_differing_only_in_methods_keep_their_own_settings(tmp_path):
    """Each run's config and resources come from the experiment that lists its method."""
    shutil.copytree(ROOT / "workflow", tmp_path / "workflow")
    shutil.copytree(ROOT / "config", tmp_path / "config")
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    first = config["experiments"][0]
    first.update(methods=["bp"], seeds=[0], epochs=2, schedule={"name": "constant"})
    first["optimizers"] = {"sgd": {**first["optimizers"]["sgd"], "lr": 0.01}}
    second = {**first, "methods": ["fa"], "epochs": 3, "optimizers": {"sgd": {"name": "sgd", "lr": 0.002}},
              "resources": {"gpu": 0, "threads": 1, "mem_mb": 3210, "runtime": 15}}
    config["experiments"].append(second)
    (tmp_path / "config" / "two.yaml").write_text(yaml.safe_dump(config))
    configs = [f"results/configs/digits/lenet_mnist/sgd/xavier/{m}/seed0.yaml" for m in ("bp", "fa")]
    result = snakemake(tmp_path, *configs, "--cores", "1", "--configfile", "config/two.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    bp, fa = (yaml.safe_load((tmp_path / name).read_text()) for name in configs)
    assert (bp["epochs"], bp["optimizer"]["lr"]) == (2, 0.01)
    assert (fa["epochs"], fa["optimizer"]["lr"]) == (3, 0.002)

    plan = snakemake(tmp_path, "results/runs/digits/lenet_mnist/sgd/xavier/fa/seed0/best.pt", "-n",
                     "--configfile", "config/two.yaml")
    assert plan.returncode == 0, plan.stderr[-3000:]
    train = plan.stdout[plan.stdout.index("rule train:"):]
    assert "mem_mb=3210" in train[:train.index("\n\n")]


def test_small_study_end_to_end(project):
    run = snakemake(project, "--cores", "2", "--configfile", "config/small.yaml")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = project / "results"
    for name in SMALL_STUDY_FIGURES:
        figure = results / "figures" / f"{name}.png"
        assert figure.stat().st_size > 5000 and figure.read_bytes()[:4] == b"\x89PNG"
        pdf = results / "figures" / f"{name}.pdf"  # the same figure as vector graphics
        assert pdf.stat().st_size > 1000 and pdf.read_bytes()[:5] == b"%PDF-"
    assert not (results / "figures" / "onepixel.png").exists()  # no OnePixel in this study
    # what each train and attack job took (time, memory), to size cluster requests
    for benchmark in ("train/digits/lenet_mnist/sgd/xavier/fa/seed0.tsv",
                      "attack/digits/lenet_mnist/sgd/xavier/fa/seed0.tsv"):
        header = (results / "benchmarks" / benchmark).read_text().splitlines()[0]
        assert header.split("\t")[:2] == ["s", "h:m:s"] and "max_rss" in header
    table = (results / "tables" / "error_table.md").read_text()
    assert "bp" in table and "fa" in table and "(" in table
    robustness = (results / "tables" / "robustness.csv").read_text()
    assert "transfer" in robustness and "feedback" in robustness and "true" in robustness

    report = snakemake(project, "--report", "results/report.html", "--configfile", "config/small.yaml")
    assert report.returncode == 0, report.stderr[-3000:]
    html = (results / "report.html").read_text(errors="ignore")
    assert len(html) > 50_000 and "robustness" in html
    assert "Feedback alignment without weight transport, reproduced" in html  # workflow.rst
    assert "Every attack result in one long table" in html  # the robustness table's caption

    again = snakemake(project, "-n", "--configfile", "config/small.yaml")
    assert "Nothing to be done" in again.stdout + again.stderr

    # delete one checkpoint: only that run and what depends on it is redone
    (results / "runs/digits/lenet_mnist/sgd/xavier/fa/seed0/best.pt").unlink()
    plan = snakemake(project, "-n", "--configfile", "config/small.yaml")
    counts = job_counts(plan.stdout)
    assert counts["train"] == 1 and "evaluate" not in counts
    assert counts["attack"] == 1  # fa's pgd x 2 gradients, square, transfer; bp untouched
    assert "run_config" not in counts and "data" not in counts


def test_lint_is_clean():
    result = snakemake(ROOT, "--lint")
    assert result.returncode == 0
    assert "Lints for" not in result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr


def test_snakefmt_is_clean():
    """The workflow as snakefmt formats it (the workflow catalog's standard)."""
    if not shutil.which("snakefmt"):
        pytest.skip("snakefmt is not installed (pip install snakefmt)")
    result = subprocess.run(["snakefmt", "--check", "workflow"], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# ----------------------------------------------------------------------------- one source of names

def quoted_strings(path: Path) -> list[str]:
    """Every string literal of a workflow file (Snakemake's grammar is Python's for strings)."""
    return [m.group(2) for m in re.finditer(r"(?<![\w])([\"'])([^\"'\n]*)\1", path.read_text())]


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_workflow_lists_no_name_biofa_owns(path):
    """Methods, attacks, threat models, figures, tables and a run folder's files are biofa's:
    the workflow imports them, so none may be typed in a workflow file again."""
    owned = {*METHODS, *names.ATTACKS, *names.THREAT_MODELS, *names.FIGURE_NAMES,
             *names.RUN_TABLES, names.ATTACK_TABLE, *names.FIGURE_FORMATS,
             *RunFolder.TRAINED, RunFolder.LAST,
             *(RunFolder.evaluation(split) for split in RunFolder.EVALUATIONS)}
    literals = quoted_strings(path)
    typed = sorted({text for text in literals for name in owned
                    if text == name or re.search(rf"(^|[/{{}}]){re.escape(name)}($|[.{{}}])", text)})
    assert not typed, f"{path.relative_to(ROOT)} types biofa's names: {typed}"
    assert not [text for text in literals if "config/reference" in text and path.name != "common.smk"]


def test_planned_files_follow_biofa_names(project):
    """What the DAG plans is named as biofa names it: a run folder's files, the collected
    tables, each figure's input table and its PNG and PDF, the threat models of attacks."""
    result = snakemake(project, "-n", "--configfile", "config/small.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = planned_jobs(result.stdout)
    by_rule = {}
    for job in jobs:
        by_rule.setdefault(job["rule"], []).append(job)

    for job in by_rule["train"]:
        assert sorted(Path(f).name for f in job["output"]) == sorted(
            [*RunFolder.TRAINED, RunFolder.evaluation("test")])
    [collect] = by_rule["collect_runs"]
    assert [Path(f).stem for f in collect["output"]] == list(names.RUN_TABLES)
    [attacks] = by_rule["collect_attacks"]
    assert [Path(f).stem for f in attacks["output"]] == [names.ATTACK_TABLE]
    from biofa.study.attack import plan_file

    section = study_config.validate_study(
        yaml.safe_load((project / "config" / "small.yaml").read_text()))["attacks"]
    planned = [plan_file(attack, gradient) for attack, gradient in attack_plan(section)]
    assert {gradient for _, gradient in attack_plan(section)} <= set(names.THREAT_MODELS)
    for job in by_rule["attack"]:
        assert [Path(f).name for f in job["output"]] == planned
    assert {job["wildcards"]["method"] for job in by_rule["train"]} <= set(METHODS)

    from biofa.study.figures import figure_paths

    figures = {job["wildcards"]["figure"]: job for job in by_rule["figure"]}
    assert set(figures) == set(SMALL_STUDY_FIGURES)
    for name, job in figures.items():
        png, pdf = job["output"]
        assert figure_paths(png) == {"png": Path(png), "pdf": Path(pdf)}
        assert Path(job["input"][0]).stem == names.FIGURE_TABLES[name]
        published = [f for f in job["input"] if f.endswith("paper_robustness.csv")]
        assert bool(published) == (name in names.REFERENCE_FIGURES), name
        for path in published:  # found next to the workflow, not in the working directory
            assert Path(path).resolve() == (project / "config/reference/paper_robustness.csv").resolve()


# ----------------------------------------------------------------------------- deployment

def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_environment_pins_this_biofa_and_its_dependencies():
    """The jobs' environment installs a released biofa (resolvable from any folder, so the
    workflow works as a module), the version of this checkout, with every dependency pinned."""
    env = yaml.safe_load((ROOT / "workflow/envs/biofa.yaml").read_text())
    [pip] = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert not [line for line in pip if line.startswith("-e") or "/" in line], pip
    pins = dict(line.split("==", 1) for line in pip)
    project = pyproject()["project"]
    biofa = [name for name in pins if requirement_name(name) == "biofa"]
    assert len(biofa) == 1 and pins[biofa[0]] == project["version"]
    pinned = {requirement_name(name) for name in pins}
    needed = {requirement_name(r) for r in project["dependencies"]}
    needed |= {requirement_name(r) for r in project.get("optional-dependencies", {}).get("study", [])}
    assert needed <= pinned, f"not pinned in workflow/envs/biofa.yaml: {sorted(needed - pinned)}"
    assert all(re.fullmatch(r"\d+(\.\d+)*", version) for version in pins.values()), pins
    lock = ROOT / "requirements" / "lock.txt"  # the versions the test suite passed with
    if lock.exists():
        locked = dict(line.split("==", 1) for line in lock.read_text().splitlines()
                      if "==" in line and not line.startswith("#"))
        locked = {requirement_name(name): version.strip() for name, version in locked.items()}
        differ = {name: (version, locked[requirement_name(name)]) for name, version in pins.items()
                  if requirement_name(name) in locked and locked[requirement_name(name)] != version}
        assert not differ, f"workflow/envs/biofa.yaml vs requirements/lock.txt: {differ}"


def test_catalog_files():
    """The workflow catalog's standardized usage: its yml, a licence, config/README.md."""
    catalog = yaml.safe_load((ROOT / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert catalog["report"] is True and catalog["software-stack-deployment"]["conda"] is True
    assert {"desc", "flags"} <= set(catalog["mandatory-flags"])
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "the biofa authors" in licence
    assert pyproject()["project"]["license"] == {"text": "MIT"}
    assert (ROOT / "config" / "README.md").exists()
    assert (ROOT / "workflow" / "report" / "workflow.rst").exists()


def test_slurm_profile_leaves_the_stop_signal_to_slurms_sigterm():
    """SLURM's SIGTERM (time limit, preemption, scancel) is what biofa checkpoints on; a
    --signal=USR1 for the whole job step would also end the snakemake process running
    the job, so the profile asks for none; a stopped job is run again and resumes."""
    profile = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    assert "slurm_extra" not in profile["set-resources"]["train"]
    default = yaml.safe_load((ROOT / "workflow/profiles/default/config.yaml").read_text())
    assert default["retries"] >= 1  # the stopped job is run again and resumes
