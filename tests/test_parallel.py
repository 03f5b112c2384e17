"""Every rule under DistributedDataParallel: 2 gloo processes with half the batch each take
the steps of one process with the whole batch (tests/data_parallel_steps.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import biofa
from biofa.errors import UsageError
from biofa.methods import METHODS
from biofa.parallel import data_parallel, feedback_buffers

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import data_parallel_steps as steps  # noqa: E402

#: Batch statistics differ between one batch of 8 and two of 4: with batch norm the
#: reference averages the gradients of the two halves, each normalised by its own.
GHOST = {"lenet_mnist": 1, "resnet20": 2}
#: Running statistics are each rank's own (rank 0's are broadcast at each forward
#: pass), and the sign rules' B is a cache rebuilt from W: neither is compared.
NOT_COMPARED = ("running_mean", "running_var", "num_batches_tracked", "sign_feedback")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(HERE / "data_parallel_steps.py"), str(out)],
        env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


@pytest.mark.parametrize("model", list(steps.MODELS))
@pytest.mark.parametrize("method", list(METHODS))
def test_two_processes_take_the_steps_of_one_with_the_whole_batch(runs, model, method):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        reference = steps.train(steps.make_model(model, method), steps.make_batches(model),
                                GHOST[model])
    finally:
        torch.set_default_dtype(previous)
    ranks = [torch.load(runs / f"{model}-{method}-rank{rank}.pt", weights_only=True)
             for rank in (0, 1)]
    assert set(ranks[0]) == set(reference)
    compared = [key for key in reference if not key.endswith(NOT_COMPARED)]
    assert any("weight" in key for key in compared)
    for key in compared:
        # the ranks hold the same numbers bit for bit: every update is the same all-reduce
        assert torch.equal(ranks[0][key], ranks[1][key]), f"{method} {model}: {key} differs between ranks"
        torch.testing.assert_close(ranks[0][key], reference[key], rtol=1e-12, atol=1e-12,
                                   msg=lambda m: f"{method} {model} {key}: {m}")
    if method == "brsf":  # three steps: the first uses setup's M, then two redraws
        draws = [value[1].item() for key, value in ranks[0].items() if key.endswith("feedback_draws")]
        assert draws and set(draws) == {2}


def test_ranks_built_from_different_seeds_are_refused(runs):
    for rank in (0, 1):
        text = (runs / f"refused-rank{rank}.txt").read_text()
        assert "holds other feedback buffers" in text and "conv1.feedback_weight" in text
        assert "seed torch the same way on every rank" in text


def test_data_parallel_needs_a_process_group():
    with pytest.raises(UsageError, match="init_process_group"):
        data_parallel(steps.make_model("lenet_mnist", "fa"))


def test_feedback_buffers_are_the_rules_not_torchs():
    model = steps.make_model("resnet20", "brsf")
    names = feedback_buffers(model)
    assert "conv1.feedback_magnitude" in names and "conv1.feedback_draws" in names
    assert "conv1.sign_feedback" in names
    assert "conv1.sign_feedback" not in feedback_buffers(model, derived=False)
    assert not [name for name in names if "running" in name or name.startswith("bn")]


def test_brsf_redraws_do_not_depend_on_the_global_generator():
    """Two copies of a model, torch's generator reseeded differently before every step:
    the same magnitudes (the layer's own stream), unlike the old global-generator draws."""
    models = [steps.make_model("lenet_mnist", "brsf") for _ in range(2)]
    x, y = steps.make_batches("lenet_mnist")[0]
    for model, seed in zip(models, (1, 2)):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for step in range(3):
            torch.manual_seed(seed * 100 + step)
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        model(x)  # the redraw after the last step
    first, second = (dict(m.named_buffers()) for m in models)
    assert torch.equal(first["fc1.feedback_magnitude"], second["fc1.feedback_magnitude"])
    assert first["fc1.feedback_draws"][1].item() == 3
    fresh = steps.make_model("lenet_mnist", "brsf")
    assert not torch.equal(dict(fresh.named_buffers())["fc1.feedback_magnitude"],
                           first["fc1.feedback_magnitude"])
