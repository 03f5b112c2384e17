"""``biofa attack``: adversarial robustness of a trained run, through either gradient.

White-box attacks (fgsm, pgd, tpgd, apgd, and autoattack: torchattacks' standard AutoAttack)
run under two threat models, the column ``gradient`` of the output:

* ``feedback``: the gradient the learning rule itself computes (through B, or DFA's
  projections) — the setting of Sanfiz & Akrout 2021;
* ``true``: the exact gradient of the same forward function (``biofa.true_gradient``).

Robustness that holds only under ``feedback`` is gradient masking, not robustness.
Black-box attacks (square, onepixel) use the model's outputs only (``gradient`` =
``none``); ``transfer`` feeds the target the PGD examples crafted on a backpropagation
model of the same architecture and data (``gradient`` = ``transfer``).

Images are the first ``n`` test images, in [0, 1] (the models normalise inside), and an
image counts as robust only if it is classified correctly both clean and attacked, so
robust accuracy never exceeds clean accuracy. Strength 0 (eps, pixels) is the clean
image itself.
"""

from __future__ import annotations

import copy
import math
import sys
from contextlib import nullcontext
from pathlib import Path

from . import io
from .names import (ATTACK_COLUMNS, ATTACKS, AUTOATTACK, DEFAULT_QUERIES, FIXED_THREAT_MODEL,
                    GRADIENT_ATTACKS, GRADIENTS, ONEPIXEL_POPSIZE, ONEPIXEL_STEPS,
                    PAPER_SQUARE_QUERIES, TRANSFER_GRADIENT, run_keys)
from .run import RunFolder
from ..errors import UsageError

# torch, numpy, pandas, tqdm and the data sets are imported by the functions that attack,
# so that the plan (:func:`plan`, :func:`plan_files`) and the study schema, which reads
# this module's names, cost no more than :mod:`biofa.study.names`.


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


#: The attacks whose rows record their ``steps`` (iterations) and ``queries``.
STEPPED = ("pgd", "tpgd", "apgd", "transfer", AUTOATTACK)
QUERIED = tuple(DEFAULT_QUERIES)

#: AutoAttack's targeted attacks (APGD-T, FAB-T) aim at the ``n_classes - 1`` most likely
#: wrong classes: 10 gives the standard version's 9 targets, fewer classes fewer targets.
AUTOATTACK_CLASSES = 10


def default_queries(attack: str) -> int:
    """The query budget ``attack`` runs with unless told otherwise (any attack: the rows
    record queries only for those of :data:`QUERIED`)."""
    return DEFAULT_QUERIES.get(attack, PAPER_SQUARE_QUERIES)


def make_attack(name: str, model, strength: float, *, steps: int = 10,
                queries: int = PAPER_SQUARE_QUERIES, seed: int = 0, batch_size: int = 128,
                classes: int = AUTOATTACK_CLASSES):
    """The torchattacks object for ``name`` at ``strength`` (eps in [0, 1], or pixels);
    ``classes``: the model's number of outputs (AutoAttack's targets)."""
    import torchattacks  # imported here so that `biofa --help` stays fast

    alpha = 2.5 * strength / steps  # Madry et al.'s step: the budget is reachable from any start
    if name == "fgsm":
        return torchattacks.FGSM(model, eps=strength)
    if name in ("pgd", "transfer"):
        return torchattacks.PGD(model, eps=strength, alpha=alpha, steps=steps, random_start=True)
    if name == "tpgd":
        return torchattacks.TPGD(model, eps=strength, alpha=alpha, steps=steps)
    if name == "apgd":
        return torchattacks.APGD(model, norm="Linf", eps=strength, steps=steps, seed=seed)
    if name == AUTOATTACK:
        return _autoattack(torchattacks, model, strength, steps=steps, queries=queries,
                           seed=seed, classes=classes)
    if name == "square":
        return torchattacks.Square(model, norm="Linf", eps=strength, n_queries=queries, seed=seed)
    if name == "onepixel":
        return torchattacks.OnePixel(model, pixels=int(strength), steps=ONEPIXEL_STEPS,
                                     popsize=ONEPIXEL_POPSIZE, inf_batch=batch_size)
    raise UsageError(f"unknown attack {name!r}; valid attacks: {', '.join(ATTACKS)}")


def _autoattack(torchattacks, model, eps: float, *, steps: int, queries: int, seed: int,
                classes: int):
    """torchattacks' standard L-inf AutoAttack with ``steps`` iterations of each of its
    gradient attacks and ``queries`` for its Square.

    torchattacks builds the four attacks (APGD-CE, APGD-T, FAB-T, Square) inside and runs
    them through its MultiAttack, which hands each attack only the images every earlier
    one left correctly classified; their iterations and queries are not arguments of
    AutoAttack, so they are set on the attacks it built. A fixed seed: torchattacks draws
    one from the clock without it, and reruns would differ.

    An attack whose loss gives an output error the rule cannot turn into its feedback
    (APGD-T's targeted DLR loss under drtp, which reads the target from a cross-entropy
    error: ``SignalError``) has no feedback gradient to follow: it leaves its images as
    they are and the next attack takes them, as it would after any attack that failed.
    """
    attack = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard",
                                     n_classes=min(classes, AUTOATTACK_CLASSES), seed=seed)
    for inner in attack._autoattack.attacks:
        if isinstance(inner, torchattacks.Square):
            inner.n_queries = queries
        else:
            inner.steps = steps
        inner.forward = _without_feedback_signal(inner)
    return attack


def _without_feedback_signal(inner):
    """``inner``'s forward, which returns its images unchanged where the rule has no
    feedback for the attack's loss (see :func:`_autoattack`)."""
    import logging

    from ..errors import SignalError

    forward = inner.forward

    def attempt(images, labels):
        try:
            return forward(images, labels)
        except SignalError as error:
            logging.getLogger(__name__).info("autoattack: %s left out (%s)",
                                             type(inner).__name__, error)
            return images.clone().detach()
    return attempt


def check(attack: str, strengths: list[float], source, **counts: int) -> None:
    """Refuse what cannot run, before loading anything.

    ``counts`` are the whole-number options (n, steps, queries, batch_size): each at least 1.
    """
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            option = "--" + name.replace("_", "-")
            raise UsageError(f"{option} must be a whole number of at least 1, got {value!r}")
    if attack not in ATTACKS:
        raise UsageError(f"unknown attack {attack!r}; valid attacks: {', '.join(ATTACKS)}")
    if not strengths:
        raise UsageError(f"{attack}: give at least one strength (--eps, or --pixels for onepixel)")
    if attack == "onepixel":
        bad = [p for p in strengths if p != int(p) or p < 0]
        if bad:
            raise UsageError(f"onepixel: pixels must be whole numbers >= 0, got {bad}")
    elif any(not 0 <= eps <= 1 for eps in strengths):
        raise UsageError(f"{attack}: eps is in the units of images in [0, 1]; "
                         f"each must lie in [0, 1], got {strengths}")
    if attack == "transfer" and source is None:
        raise UsageError("transfer: give the backpropagation run to craft the examples on, "
                         "--source BP_RUN_DIR")


def _predict(model, x):
    import torch

    with torch.no_grad():
        return model(x).argmax(dim=1)


def _check_gradients(gradients) -> None:
    bad = sorted(set(gradients) - set(GRADIENTS))
    if bad:
        raise UsageError(f"unknown gradient(s) {bad}; valid: {', '.join(GRADIENTS)}")


def _check_source(run_dir, source) -> None:
    """transfer: the source run has the target's data set and model (read before any weights)."""
    target, crafted_on = RunFolder(run_dir).read_config(), RunFolder(source).read_config()
    for key in ("dataset", "model"):
        if crafted_on[key] != target[key]:
            raise UsageError(f"transfer: the source run {source} has {key} "
                             f"{crafted_on[key]!r}, the target {target[key]!r}; craft the "
                             f"examples on a bp run of the same {key}")


class _Target:
    """A run's best model and its test images, loaded once for any number of attacks;
    with ``source``, also the model transfer attacks craft their examples on."""

    def __init__(self, run_dir, source=None, device: str = "auto"):
        from .data import load

        self.model, self.config, _ = RunFolder(run_dir).load_model(device=device)
        self.device = next(self.model.parameters()).device
        self.source = source
        self.crafter = RunFolder(source).load_model(device=device)[0] if source is not None else None
        self.test = load(self.config["dataset"], self.config["data_root"], "test")

    def batches(self, n: int, batch_size: int):
        from torch.utils.data import DataLoader, Subset

        if n > len(self.test):
            raise UsageError(f"--n {n} is more than the {len(self.test)} test images of "
                             f"{self.config['dataset']}; give --n {len(self.test)} or fewer")
        return DataLoader(Subset(self.test, range(n)), batch_size=batch_size, shuffle=False)

    def attack(self, attack: str, strengths: list[float], *, n: int, gradients, steps: int,
               queries: int, batch_size: int, seed: int, source=None):
        """One row per (threat model, strength), as :func:`attack_run` returns them
        (``source``: the column of that name)."""
        import numpy as np
        import pandas as pd
        import torch
        from tqdm import tqdm

        model, config = self.model, self.config
        crafter = self.crafter if attack == "transfer" else model
        batches = self.batches(n, batch_size)
        if attack in GRADIENT_ATTACKS:
            threat_models = list(gradients)
        else:
            threat_models = [FIXED_THREAT_MODEL[attack]]

        rows = []
        for gradient in threat_models:
            for strength in strengths:
                torch.manual_seed(seed)
                np.random.seed(seed)
                clean_hits = robust_hits = 0
                desc = f"{attack} {gradient} {strength:g}"
                for x, y in tqdm(batches, desc=desc, leave=False, disable=not sys.stderr.isatty()):
                    x, y = x.to(self.device), y.to(self.device)
                    with torch.no_grad():
                        logits = model(x)
                    clean, classes = logits.argmax(dim=1) == y, logits.shape[1]
                    if strength == 0:
                        adversarial = x
                    else:
                        atk = make_attack(attack, crafter, strength, steps=steps, queries=queries,
                                          seed=seed, batch_size=batch_size, classes=classes)
                        adversarial = _attacked(atk, crafter, x, y, gradient)
                    robust = clean & (_predict(model, adversarial) == y)
                    clean_hits += int(clean.sum())
                    robust_hits += int(robust.sum())
                low, high = wilson(robust_hits, n)
                rows.append({
                    **run_keys(config), "attack": attack, "gradient": gradient,
                    "eps": strength if attack != "onepixel" else math.nan,
                    "pixels": int(strength) if attack == "onepixel" else math.nan,
                    "queries": queries if attack in QUERIED else math.nan,
                    "steps": steps if attack in STEPPED else math.nan,
                    "n_images": n, "clean_acc": clean_hits / n, "robust_acc": robust_hits / n,
                    "ci_low": low, "ci_high": high, "source": str(source) if source else ""})
        return pd.DataFrame(rows, columns=ATTACK_COLUMNS)


def _attacked(atk, crafter, x, y, gradient: str):
    """``atk``'s examples of ``x``, through the true gradient or the rule's feedback.

    A loss whose output error the rule has no feedback for (TPGD's KL divergence under
    drtp, which reads the target from a cross-entropy error: ``SignalError``) gives an
    attacker limited to that feedback nothing to follow: the images stay as they are, as
    AutoAttack's attacks do in :func:`_autoattack`.
    """
    from ..errors import SignalError
    from ..layers import true_gradient

    try:
        with true_gradient(crafter) if gradient == "true" else nullcontext():
            return atk(x, y)
    except SignalError as error:
        if gradient == "true":
            raise
        import logging

        logging.getLogger(__name__).info("%s: no feedback gradient for its loss, images "
                                         "left as they are (%s)", type(atk).__name__, error)
        return x


def attack_run(run_dir: str | Path, attack: str, strengths: list[float], *, n: int = 500,
               gradients: tuple[str, ...] = GRADIENTS, source: str | Path | None = None,
               steps: int = 10, queries: int | None = None, batch_size: int = 128,
               seed: int = 0, device: str = "auto"):
    """Clean and robust accuracy of ``run_dir``'s best model, one row per (gradient, strength)
    (a pandas DataFrame with the columns :data:`~biofa.study.names.ATTACK_COLUMNS`).

    ``queries`` defaults to the attack's own (:data:`~biofa.study.names.DEFAULT_QUERIES`:
    Square the paper's 50, AutoAttack's Square the standard 5000).
    """
    queries = default_queries(attack) if queries is None else queries
    check(attack, strengths, source, n=n, steps=steps, queries=queries, batch_size=batch_size)
    _check_gradients(gradients)
    if attack == "transfer":  # compare the two runs before loading either's weights
        _check_source(run_dir, source)
    target = _Target(run_dir, source if attack == "transfer" else None, device)
    return target.attack(attack, strengths, n=n, gradients=gradients, steps=steps,
                         queries=queries, batch_size=batch_size, seed=seed, source=source)


def attack_to_csv(out: str | Path, *args, **kwargs):
    frame = attack_run(*args, **kwargs)
    io.write_csv(out, frame)
    return frame


# ----------------------------------------------------------------------------- a study's plan
#
# A study config's ``attacks:`` section (biofa.study.study_config) names the attacks each
# target run undergoes. :func:`plan` is the one reading of it: the workflow declares its
# outputs from :func:`plan_files`, and ``biofa attack DIR --plan`` runs :func:`run_plan`.
# (Validating a section is the study config's business: this module imports nothing of
# biofa.study.study_config, whose schema reads this module's names.)


def plan(section: dict) -> dict[tuple[str, str], dict]:
    """(attack, gradient) -> that attack's options, for a study's ``attacks:`` section.

    The options are the section's keys, which are also ``biofa attack``'s option names:
    ``eps`` (a list), ``steps``, ``queries``, ``pixels`` (a list), ``n`` (the ``n_images``
    of an attack's own section). Every white-box attack runs under every white-box gradient
    with ``white_box.eps`` and ``white_box.steps``; AutoAttack under each of
    ``autoattack.gradients`` with that section's ``eps``, ``steps``, ``queries`` and, when
    it has them, its own ``n_images``; each other attack (:data:`~biofa.study.names.FIXED_THREAT_MODEL`) takes its own
    section's options and is left out when it has no strengths; transfer crafts PGD
    examples with the white-box steps, on the bp run of the target (``--source``, which
    the plan cannot know).

    ``section`` is a validated one, its defaults filled: a study config's after
    :func:`biofa.study.study_config.validate_study`, or what ``biofa attack --plan`` reads
    (:func:`biofa.study.cli.read_attacks`).
    """
    white = section["white_box"]
    planned: dict[tuple[str, str], dict] = {}
    for attack in white["attacks"]:
        for gradient in white["gradients"]:
            planned[attack, gradient] = {"eps": list(white["eps"]), "steps": white["steps"]}
    auto = section.get(AUTOATTACK, {})  # a section of an older study has none
    if auto.get("eps"):
        options = {"eps": list(auto["eps"]), "steps": auto["steps"], "queries": auto["queries"]}
        if auto.get("n_images") is not None:
            options["n"] = auto["n_images"]
        for gradient in auto["gradients"]:
            planned[AUTOATTACK, gradient] = dict(options)
    # each other attack has a section named after it; without strengths it is left out
    for attack, gradient in FIXED_THREAT_MODEL.items():
        settings = copy.deepcopy(section[attack])
        if not any(isinstance(value, list) and value for value in settings.values()):
            continue
        if gradient == TRANSFER_GRADIENT:  # PGD examples, with the white-box attacks' steps
            settings["steps"] = white["steps"]
        planned[attack, gradient] = settings
    return planned


def plan_file(attack: str, gradient: str) -> str:
    """The CSV of one planned attack, in ``biofa attack --plan``'s output folder."""
    return f"{attack}-{gradient}.csv"


def plan_files(section: dict) -> list[str]:
    """The file names ``biofa attack DIR --plan`` writes for ``section``, in plan order."""
    return [plan_file(attack, gradient) for attack, gradient in plan(section)]


def run_plan(run_dir: str | Path, section: dict, out_dir: str | Path, *,
             source: str | Path | None = None, n: int | None = None,
             batch_size: int | None = None, seed: int | None = None,
             device: str = "auto") -> list[Path]:
    """Every attack :func:`plan` gives for ``section``, on ``run_dir``'s best model loaded once.

    Writes ``out_dir/{attack}-{gradient}.csv`` for each (atomically, each as soon as it
    is done), the same file ``biofa attack DIR --attack A --gradient G`` with the same
    options writes. ``section`` is validated, as for :func:`plan`; ``n``, ``batch_size``
    and ``seed`` default to its ``n_images``, ``batch_size`` and ``seed``; an attack with
    images of its own (``autoattack.n_images``) attacks the first of them, at most ``n``.
    Everything is checked before anything loads. Returns the paths written.
    """
    planned = plan(section)
    n = section["n_images"] if n is None else n
    batch_size = section["batch_size"] if batch_size is None else batch_size
    seed = section["seed"] if seed is None else seed
    jobs = []
    for (attack, gradient), options in planned.items():
        strengths = options.get("pixels" if attack == "onepixel" else "eps", [])
        kwargs = {"steps": options.get("steps", 10),
                  "queries": options.get("queries", default_queries(attack)),
                  "n": min(options.get("n", n), n)}
        if attack == "transfer" and source is None:
            raise UsageError("the plan has transfer attacks (attacks.transfer.eps): give the "
                             "backpropagation run to craft the examples on, --source BP_RUN_DIR")
        check(attack, strengths, source, batch_size=batch_size, **kwargs)
        jobs.append((attack, gradient, strengths, kwargs))
    transfer = any(attack == "transfer" for attack, *_ in jobs)
    if transfer:
        _check_source(run_dir, source)
    target = _Target(run_dir, source if transfer else None, device)
    target.batches(n, batch_size)  # too many images: refused before the first attack
    written = []
    for attack, gradient, strengths, kwargs in jobs:
        gradients = (gradient,) if attack in GRADIENT_ATTACKS else GRADIENTS
        frame = target.attack(attack, strengths, gradients=gradients,
                              batch_size=batch_size, seed=seed,
                              source=source if attack == "transfer" else None, **kwargs)
        path = Path(out_dir) / plan_file(attack, gradient)
        io.write_csv(path, frame)
        written.append(path)
    return written
