"""``biofa attack``: adversarial robustness of a trained run, through either gradient.

White-box attacks (fgsm, pgd, tpgd, apgd) run under two threat models, the column
``gradient`` of the output:

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

import math
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from . import io
from .names import (ATTACK_COLUMNS, ATTACKS, GRADIENTS, ONEPIXEL_POPSIZE, ONEPIXEL_STEPS,
                    PAPER_SQUARE_QUERIES, WHITE_BOX)
from .data import load
from .run import RunFolder
from ..layers import true_gradient
from ..errors import UsageError


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def make_attack(name: str, model, strength: float, *, steps: int = 10,
                queries: int = PAPER_SQUARE_QUERIES, seed: int = 0, batch_size: int = 128):
    """The torchattacks object for ``name`` at ``strength`` (eps in [0, 1], or pixels)."""
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
    if name == "square":
        return torchattacks.Square(model, norm="Linf", eps=strength, n_queries=queries, seed=seed)
    if name == "onepixel":
        return torchattacks.OnePixel(model, pixels=int(strength), steps=ONEPIXEL_STEPS,
                                     popsize=ONEPIXEL_POPSIZE, inf_batch=batch_size)
    raise UsageError(f"unknown attack {name!r}; valid attacks: {', '.join(ATTACKS)}")


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


@torch.no_grad()
def _predict(model, x):
    return model(x).argmax(dim=1)


def attack_run(run_dir: str | Path, attack: str, strengths: list[float], *, n: int = 500,
               gradients: tuple[str, ...] = GRADIENTS, source: str | Path | None = None,
               steps: int = 10, queries: int = PAPER_SQUARE_QUERIES, batch_size: int = 128,
               seed: int = 0, device: str = "auto") -> pd.DataFrame:
    """Clean and robust accuracy of ``run_dir``'s best model, one row per (gradient, strength)."""
    check(attack, strengths, source, n=n, steps=steps, queries=queries, batch_size=batch_size)
    bad = sorted(set(gradients) - set(GRADIENTS))
    if bad:
        raise UsageError(f"unknown gradient(s) {bad}; valid: {', '.join(GRADIENTS)}")
    if attack == "transfer":  # compare the two runs before loading either's weights
        target, crafted_on = RunFolder(run_dir).read_config(), RunFolder(source).read_config()
        for key in ("dataset", "model"):
            if crafted_on[key] != target[key]:
                raise UsageError(f"transfer: the source run {source} has {key} "
                                 f"{crafted_on[key]!r}, the target {target[key]!r}; craft the "
                                 f"examples on a bp run of the same {key}")
    model, config, _ = RunFolder(run_dir).load_model(device=device)
    device_ = next(model.parameters()).device
    crafter = RunFolder(source).load_model(device=device)[0] if attack == "transfer" else model
    test = load(config["dataset"], config["data_root"], "test")
    if n > len(test):
        raise UsageError(f"--n {n} is more than the {len(test)} test images of {config['dataset']}; "
                         f"give --n {len(test)} or fewer")
    batches = DataLoader(Subset(test, range(n)), batch_size=batch_size, shuffle=False)
    if attack in WHITE_BOX:
        threat_models = list(gradients)
    else:
        threat_models = ["transfer" if attack == "transfer" else "none"]

    rows = []
    for gradient in threat_models:
        for strength in strengths:
            torch.manual_seed(seed)
            np.random.seed(seed)
            clean_hits = robust_hits = 0
            desc = f"{attack} {gradient} {strength:g}"
            for x, y in tqdm(batches, desc=desc, leave=False, disable=not sys.stderr.isatty()):
                x, y = x.to(device_), y.to(device_)
                clean = _predict(model, x) == y
                if strength == 0:
                    adversarial = x
                else:
                    atk = make_attack(attack, crafter, strength, steps=steps, queries=queries,
                                      seed=seed, batch_size=batch_size)
                    with true_gradient(crafter) if gradient == "true" else nullcontext():
                        adversarial = atk(x, y)
                robust = clean & (_predict(model, adversarial) == y)
                clean_hits += int(clean.sum())
                robust_hits += int(robust.sum())
            low, high = wilson(robust_hits, n)
            rows.append({
                "method": config["method"], "model": config["model"], "dataset": config["dataset"],
                "optimizer": config["optimizer"]["name"], "seed": config["seed"], "attack": attack, "gradient": gradient,
                "eps": strength if attack != "onepixel" else math.nan,
                "pixels": int(strength) if attack == "onepixel" else math.nan,
                "queries": queries if attack == "square" else math.nan,
                "steps": steps if attack in ("pgd", "tpgd", "apgd", "transfer") else math.nan,
                "n_images": n, "clean_acc": clean_hits / n, "robust_acc": robust_hits / n,
                "ci_low": low, "ci_high": high, "source": str(source) if source else ""})
    return pd.DataFrame(rows, columns=ATTACK_COLUMNS)


def attack_to_csv(out: str | Path, *args, **kwargs) -> pd.DataFrame:
    frame = attack_run(*args, **kwargs)
    io.write_csv(out, frame)
    return frame
