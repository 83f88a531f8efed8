"""Tasks: what a network learns and how it is scored (classification, reconstruction), through the same rules,
trainer and evaluation."""

from __future__ import annotations

import pytest
import torch

from targetprop import Network, ReplicaRandom
from targetprop.config import make_config
from targetprop.errors import ConfigError
from targetprop.tasks import Classify, Reconstruct
from targetprop.trainer import build, evaluate, train
from targetprop.units import output_unit


@pytest.mark.parametrize("name", ["sigmoid", "linear", "softmax"])
def test_costs_with_dense_targets_match_autograd(name):
    """``loss_grad`` and ``output_grad`` of the batch-mean cost against a dense target, against autograd."""
    out = output_unit(name)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(2, 5, 7, dtype=torch.float64, generator=gen, requires_grad=True)
    t = torch.rand(2, 5, 7, dtype=torch.float64, generator=gen)
    if name == "softmax":
        t = t / t.sum(-1, keepdim=True)  # a distribution over the outputs
    (grad_a,) = torch.autograd.grad(out.loss(a, t).sum(), a)
    torch.testing.assert_close(out.loss_grad(a.detach(), t), grad_a)
    h = out(a.detach()).requires_grad_(True)
    a_of_h = out.inverse(h)
    (grad_h,) = torch.autograd.grad(out.loss(a_of_h, t).sum(), h)
    if name != "softmax":  # softmax's inverse is defined up to a constant: its output_grad is for one-hot codes
        torch.testing.assert_close(out.output_grad(a.detach(), h.detach(), t), grad_h)


def test_reconstruction_error_is_the_mean_squared_error_per_sample(digits):
    net = Network.from_spec("64-16-64", "tanh", "sigmoid", seeds=[0, 1])
    err = evaluate(net, digits.test, task=Reconstruct())["error"]
    with torch.no_grad():
        by_hand = (torch.sigmoid(net(digits.test.x)) - digits.test.x).square().sum(-1).mean(-1)
    torch.testing.assert_close(err, by_hand.float())


def test_averaged_stochastic_passes_score_like_the_averaged_probabilities(digits):
    """With Bernoulli units, the error and cost of ``samples`` passes come from the averaged class probabilities."""
    net = Network.from_spec("64-32-10", "bernoulli", seeds=[0])
    result = evaluate(net, digits.test, ReplicaRandom([0], "eval"), samples=5)
    noise = ReplicaRandom([0], "eval")
    with torch.no_grad():
        probs = sum(torch.softmax(net(digits.test.x, noise.uniform_like), -1) for _ in range(5)) / 5
    y = digits.test.y
    assert result["error"].item() == pytest.approx(100.0 * (probs[0].argmax(-1) != y).float().mean().item())
    loss = -torch.log(probs[0].gather(-1, y.unsqueeze(-1))).mean()
    assert result["loss"].item() == pytest.approx(loss.item(), rel=1e-5)


@pytest.mark.parametrize("rule", ["bp", "dtp", "fa"])
def test_an_auto_encoder_learns_to_reconstruct_digits_under_every_rule(tmp_path, digits, rule):
    cfg = make_config(
        {rule: {"optimizer": "adam", "lr": 0.003}},
        rule=rule,
        task="reconstruct",
        output="sigmoid",
        arch="64-32-64",
        epochs=10,
        seeds=[0, 1],
        out=str(tmp_path),
    )
    result = train(cfg, dataset=digits, progress=False)
    first = [h["test_error"] for h in result.history if h["epoch"] == 1]
    last = [h["test_error"] for h in result.history if h["epoch"] == 10]
    assert max(last) < 0.5 * min(first), (first, last)  # squared error per sample roughly halves, or better
    assert result.summary["task"] == "reconstruct" and result.summary["error"] == "reconstruction error"
    assert {"batch_loss", "batch_error"} <= set(result.history[-1])


def test_tasks_refuse_what_they_cannot_train(digits):
    with pytest.raises(ConfigError, match="needs 64 inputs and 64 outputs"):
        build(make_config(task="reconstruct", output="sigmoid", arch="64-32-10"), digits)
    with pytest.raises(ConfigError, match="use --output sigmoid"):
        build(make_config(task="reconstruct", arch="64-32-64"), digits)
    with pytest.raises(ConfigError, match="needs 64 inputs and 10 outputs"):
        build(make_config(arch="64-32-64"), digits)
    assert Classify().n_outputs(digits) == 10 and Reconstruct().n_outputs(digits) == 64


def test_input_noise_perturbs_training_only_and_resumes_exactly(tmp_path, digits):
    """``input_noise``: each training mini-batch gets ``x + σ·N(0, 1)`` from each replica's own input stream; a
    run resumed from its checkpoint draws the same noise as an uninterrupted one."""
    common = dict(rule="dtp", arch="64-32-32-10", seeds=[0, 1], dtype="float64", out=str(tmp_path))
    clean = train(make_config(epochs=2, name="clean", **common), dataset=digits, progress=False)
    whole = train(make_config(epochs=2, name="whole", input_noise=0.3, **common), dataset=digits, progress=False)
    assert [h["train_loss"] for h in whole.history] != [h["train_loss"] for h in clean.history]
    part = train(make_config(epochs=1, name="part", input_noise=0.3, **common), dataset=digits, progress=False)
    resumed = train(
        make_config(epochs=2, name="part", input_noise=0.3, **common),
        dataset=digits,
        run_dir=part.run_dir,
        resume=True,
        progress=False,
    )
    for p, q in zip(resumed.net.forward_parameters(), whole.net.forward_parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    # evaluation sees clean inputs: the reported errors are those of the trained net on the data as it is
    again = evaluate(whole.net, digits.test, task=Classify())["error"].tolist()
    assert again == [h["test_error"] for h in whole.history if h["epoch"] == 2]


def test_eval_every_logs_every_nth_epoch_and_the_last_trains_the_same_and_resumes_after_a_silent_epoch(
    tmp_path, digits, monkeypatch
):
    """``eval_every = 2`` over 5 epochs: rows for epochs 2, 4 and 5 only; the weights are those of a run evaluated
    every epoch (evaluation draws from its own stream); a run stopped in epoch 4's evaluation resumes from the
    checkpoint of unevaluated epoch 3 to the uninterrupted run's weights and rows."""
    import importlib

    from targetprop.errors import Interrupted
    from targetprop.runs import RunDir

    trainer = importlib.import_module("targetprop.trainer")  # the module (the package exports its train function)
    common = dict(
        rule="fa", arch="64-24-24-10", activation="bernoulli", eval_samples=2, seeds=[0, 1], out=str(tmp_path)
    )
    sparse = train(make_config(epochs=5, eval_every=2, name="sparse", **common), dataset=digits, progress=False)
    assert [(r["epoch"], r["replica"]) for r in sparse.history] == [(e, r) for e in (2, 4, 5) for r in (0, 1)]
    assert [(r["epoch"], r["replica"]) for r in RunDir(sparse.run_dir.path).read_metrics().rows] == [
        (e, r) for e in (2, 4, 5) for r in (0, 1)
    ]
    assert sparse.summary["epochs"] == 5
    dense = train(make_config(epochs=5, name="dense", **common), dataset=digits, progress=False)
    assert len(dense.history) == 10
    for p, q in zip(sparse.net.parameters(), dense.net.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)

    evaluate, calls = trainer.evaluate, []

    def stop_in_epoch_4(*args, **kwargs):  # the train, valid and test evaluations of epoch 2, then epoch 4's
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer, "evaluate", stop_in_epoch_4)
    config = make_config(epochs=5, eval_every=2, name="stopped", **common)
    with pytest.raises(Interrupted):
        train(config, dataset=digits, progress=False)
    stopped = RunDir(tmp_path / "stopped")
    assert stopped.load_checkpoint()["epoch"] == 3  # the last finished epoch, evaluated or not
    assert [r["epoch"] for r in stopped.read_metrics().rows] == [2, 2]
    monkeypatch.setattr(trainer, "evaluate", evaluate)
    resumed = train(config, dataset=digits, run_dir=stopped, resume=True, progress=False)
    for p, q in zip(resumed.net.parameters(), sparse.net.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.history] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in sparse.history
    ]


def test_eval_train_samples_averages_fewer_passes_over_the_training_split_only(tmp_path, digits):
    """``eval_train_samples = 1`` with ``eval_samples = 20`` (the stochastic net's protocol, cheapened): the logged
    train error is one stochastic pass over the training split and the validation and test errors average 20
    passes, drawn in that order from the evaluation stream; training is untouched."""
    common = dict(rule="fa", arch="64-24-24-10", activation="bernoulli", epochs=1, seeds=[0, 1], out=str(tmp_path))
    cheap = train(
        make_config(eval_samples=20, eval_train_samples=1, name="cheap", **common), dataset=digits, progress=False
    )
    full = train(make_config(eval_samples=20, name="full", **common), dataset=digits, progress=False)
    for p, q in zip(cheap.net.parameters(), full.net.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    stream = ReplicaRandom([0, 1], "eval", torch.device("cpu"))
    by_hand = {
        name: evaluate(cheap.net, split, stream, samples, Classify(), cheap.rule)["error"].tolist()
        for name, split, samples in (("train", digits.train, 1), ("valid", digits.valid, 20), ("test", digits.test, 20))
    }
    for name, errors in by_hand.items():
        assert [r[f"{name}_error"] for r in cheap.history] == errors
    assert by_hand["train"] != [r["train_error"] for r in full.history]  # the full run averaged 20 passes there
