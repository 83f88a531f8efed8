"""The DTP paper's auto-encoder: tied weights, the hidden target ``ĥ = 2h − f(z)`` and its layer-local losses, and
the linear classifier on the learned code."""

from __future__ import annotations

import math
import multiprocessing
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import CLI_TIMEOUT, error_line, read_jsonl, run_cli, show

from targetprop import Network, ReplicaRandom
from targetprop.config import make_config
from targetprop.data import load_dataset
from targetprop.errors import ConfigError
from targetprop.probe import (
    ProbeSettings,
    _svm,
    encoder_features,
    finetune_probe,
    linear_probe,
    near_constant_units,
    run_probe,
    svm_probe,
)
from targetprop.progress import Progress
from targetprop.report import probe_columns
from targetprop.rules.bp import BP, BPConfig
from targetprop.rules.dtp_autoencoder import DTPAutoencoder, DTPAutoencoderConfig
from targetprop.tasks import Reconstruct
from targetprop.trainer import train


def tied_net(replicas: int = 2) -> Network:
    return Network.from_spec(
        "6-4-6", "sigmoid", "sigmoid", seeds=list(range(replicas)), feedback="none", tied=True, dtype=torch.float64
    )


def batch(replicas: int = 2, size: int = 5) -> torch.Tensor:
    return torch.rand(replicas, size, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))


def test_tied_net_starts_tied_and_refuses_other_architectures():
    net = tied_net()
    assert torch.equal(net.layers[1].weight, net.layers[0].weight.transpose(1, 2))
    assert net.tied_pairs() == [(0, 2)]
    with pytest.raises(ConfigError, match="n-H-n"):
        Network.from_spec("6-4-5", "sigmoid", "sigmoid", tied=True)
    with pytest.raises(ConfigError, match="tied_weights needs an auto-encoder"):
        make_config(data="digits", arch="64-32-10", tied_weights=True)


def test_bp_on_tied_weights_is_the_gradient_of_the_shared_matrix():
    """The optimiser's direction for W is ∂L/∂W of the cost with the decoder's weights Wᵀ: autograd on one W."""
    net, x = tied_net(), batch()
    rule = BP(net, BPConfig(lr=0.01, optimizer="sgd"), ReplicaRandom([0, 1], "train"), Reconstruct())
    grads, _ = rule.forward_updates(x, x)
    shared = rule.optimizer._tie(grads)
    w = net.layers[0].weight.detach().clone().requires_grad_(True)
    b1, b2 = net.layers[0].bias.detach(), net.layers[1].bias.detach()
    h = torch.sigmoid(torch.baddbmm(b1.unsqueeze(1), x, w.transpose(1, 2)))
    a = torch.baddbmm(b2.unsqueeze(1), h, w)
    (expected,) = torch.autograd.grad(net.output_unit.loss(a, x).sum(), w)
    torch.testing.assert_close(shared[0], expected)
    torch.testing.assert_close(shared[2], expected.transpose(1, 2))


@pytest.mark.parametrize("optimizer", ["centered_rmsprop", "adam", "sgd"])
@pytest.mark.parametrize("rule_cls", [BP, DTPAutoencoder])
def test_tied_weights_stay_exactly_tied_while_training(optimizer, rule_cls):
    net = tied_net()
    rule = rule_cls(net, rule_cls.Config(lr=0.05, optimizer=optimizer), ReplicaRandom([0, 1], "train"), Reconstruct())
    before = net.layers[0].weight.detach().clone()
    for k in range(5):
        rule.step(batch() + 0.01 * k, batch())
    assert not torch.equal(net.layers[0].weight, before)
    assert torch.equal(net.layers[1].weight, net.layers[0].weight.transpose(1, 2))


def test_hidden_target_and_layer_local_directions_by_autograd():
    """ĥ = 2h − f(z) with h = f(x) and z = g(h + ε); the encoder's direction is ∂/∂(W, b) of ||f(x̃) − ĥ||² (mean
    over the batch, ĥ fixed), the decoder's ∂/∂(Wᵀ, c) of the cost of z with the code h + ε fixed."""
    net, clean = tied_net(), batch()
    noisy = clean + 0.1 * torch.randn(clean.shape, dtype=clean.dtype, generator=torch.Generator().manual_seed(4))
    config = DTPAutoencoderConfig(lr=0.01, noise=0.2)
    rule = DTPAutoencoder(net, config, ReplicaRandom([0, 1], "train"), Reconstruct())
    grads, _ = rule.forward_updates(noisy, clean)

    eps = ReplicaRandom([0, 1], "train").normal((5, 4), torch.float64)  # the draw the rule made
    enc_w, enc_b = (p.detach().clone().requires_grad_(True) for p in (net.layers[0].weight, net.layers[0].bias))
    dec_w, dec_b = (p.detach().clone().requires_grad_(True) for p in (net.layers[1].weight, net.layers[1].bias))

    def f(u: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(torch.baddbmm(enc_b.unsqueeze(1), u, enc_w.transpose(1, 2)))

    with torch.no_grad():
        h = f(clean)
        code = h + 0.2 * eps
        z = torch.sigmoid(torch.baddbmm(dec_b.unsqueeze(1), code, dec_w.transpose(1, 2)))
        h_hat = 2 * h - f(z)
    encoder_loss = (f(noisy) - h_hat).square().sum(-1).mean(-1).sum()
    decoder_loss = net.output_unit.loss(torch.baddbmm(dec_b.unsqueeze(1), code, dec_w.transpose(1, 2)), clean).sum()
    expected = [*torch.autograd.grad(encoder_loss, (enc_w, enc_b)), *torch.autograd.grad(decoder_loss, (dec_w, dec_b))]
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)


def test_dtp_ae_needs_the_tied_reconstruction_net():
    net = Network.from_spec("6-4-6", "sigmoid", "sigmoid", feedback="none")
    with pytest.raises(ConfigError, match="tied_weights=true"):
        DTPAutoencoder(net, DTPAutoencoderConfig(), ReplicaRandom([0], "train"), Reconstruct())
    cfg = make_config(  # untied by choice: the rule's default (tied) does not override what the user gave
        data="digits", rule="dtp-ae", arch="64-32-64", output="sigmoid", task="reconstruct", tied_weights=False
    )
    with pytest.raises(ConfigError, match="tied_weights=true"):
        train(cfg, progress=False)


def test_dtp_ae_from_the_command_line_needs_no_flags_but_the_rule(tmp_path):
    """``--rule dtp-ae`` alone: the rule's run defaults (the tied sigmoid auto-encoder, the reconstruction task) and
    the task's default digits architecture 64-100-64; it says so, and its reconstruction error falls."""
    run = ["train", "--rule", "dtp-ae", "--data", "digits", "--epochs", "5", "--threads", "1", "-q"]
    proc = run_cli(*run, "--out", tmp_path, "--name", "ae", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    assert "--set task=reconstruct --set tied_weights=true --activation sigmoid --output sigmoid" in proc.stderr
    saved = tomllib.loads((tmp_path / "ae" / "config.toml").read_text())
    assert (saved["arch"], saved["task"], saved["tied_weights"], saved["output"]) == (
        "64-100-64", "reconstruct", True, "sigmoid"
    )  # fmt: skip
    rows = read_jsonl(tmp_path / "ae" / "metrics.jsonl")
    first, last = ([r["test_error"] for r in rows if r["epoch"] == e] for e in (1, 5))
    assert all(b < 0.7 * a for a, b in zip(first, last, strict=True)), (first, last)


def test_python_api_gets_the_rules_run_defaults_and_compare_refuses_two_networks(tmp_path):
    """``make_config(rule="dtp-ae")`` is the run the CLI's ``--rule dtp-ae`` makes (what a key the user gives stays);
    ``compare`` of rules whose defaults need different networks (EP's hard-sigmoid, dtp-ae's sigmoid) refuses, and
    says which flag settles it, rather than train each rule on a different net."""
    ae = make_config(rule="dtp-ae", data="digits")
    assert (ae.task, ae.tied_weights, ae.hidden_units, ae.output, ae.architecture) == (
        "reconstruct", True, "sigmoid", "sigmoid", "64-100-64"
    )  # fmt: skip
    assert make_config(rule="dtp-ae", data="digits", activation="tanh").hidden_units == "tanh"
    assert make_config(rule="bp", data="digits").hidden_units == "tanh"
    proc = run_cli("compare", "--rules", "ep,dtp-ae", "--data", "digits", "--epochs", "1", cwd=tmp_path)
    assert proc.returncode != 0, show(proc)
    assert "need different activations (ep 'hardsigmoid', dtp-ae 'sigmoid')" in error_line(proc), show(proc)
    assert "give --activation" in error_line(proc) and not list(tmp_path.iterdir())  # nothing half-made


def test_dtp_autoencoder_learns_features_a_linear_classifier_can_use(tmp_path):
    """On digits, DTP lowers the reconstruction error, and a softmax regression on its 64 learned features classifies
    the test digits with under 10 % error (chance: 90 %)."""
    digits = load_dataset("digits")
    cfg = make_config(
        data="digits", rule="dtp-ae", arch="64-64-64", activation="sigmoid", output="sigmoid", task="reconstruct",
        tied_weights=True, input_noise=0.1, epochs=20, seeds=[0, 1], threads=1, out=str(tmp_path),
        **{"dtp-ae": {"lr": 1e-3}},
    )  # fmt: skip
    result = train(cfg, dataset=digits, progress=False)
    first = [r["test_error"] for r in result.history if r["epoch"] == 1]
    last = [r["test_error"] for r in result.history if r["epoch"] == 20]
    assert all(b < 0.6 * a for a, b in zip(first, last, strict=True)), (first, last)
    assert encoder_features(result.net, digits.test.x).shape == (2, len(digits.test), 64)
    probe = linear_probe(result.net, digits, [0, 1], ProbeSettings(epochs=30, lr=1e-2))
    errors = [p["test_error"] for p in probe["per_replica"]]
    assert all(e < 10.0 for e in errors), errors
    print("reconstruction error, epoch 1 -> 20:", first, last, "classifier test error %:", errors)


def test_the_svm_on_the_code_takes_the_kernel_width_the_validation_split_prefers(tmp_path):
    """On the code of a DTP auto-encoder of digits, the RBF SVM is fit with the (C, γ) of the lowest validation
    error among its candidates and classifies the test digits far better than chance; a width far too narrow
    (every code its own island) scores worse on validation and is not chosen; one candidate is fit directly. Its
    control, the same SVM on the pixels, is one fit for every seed, and not the code's."""
    digits = load_dataset("digits")
    cfg = make_config(
        data="digits", rule="dtp-ae", arch="64-64-64", activation="sigmoid", output="sigmoid", task="reconstruct",
        tied_weights=True, input_noise=0.1, epochs=10, seeds=[0, 1], threads=1, out=str(tmp_path),
        **{"dtp-ae": {"lr": 1e-3}},
    )  # fmt: skip
    net = train(cfg, dataset=digits, progress=False).net
    probe = svm_probe(net, digits, [0, 1], ProbeSettings(kind="svm", svm_c=(10.0,), svm_gamma=(1.0, 1000.0)))
    for row in probe["per_replica"]:
        narrow, fitting = sorted(row["candidates"], key=lambda t: -t["gamma"])
        assert narrow["valid_error"] > fitting["valid_error"] + 20.0, row["candidates"]
        assert (row["C"], row["gamma"]) == (10.0, 1.0)
        assert row["test_error"] < 10.0 and 0 < row["support_vectors"] <= len(digits.train), row
    assert [p["seed"] for p in probe["per_replica"]] == [0, 1] and probe["settings"]["svm_gamma"] == [1.0, 1000.0]
    raw = probe["control"]["per_replica"]  # the same SVM on the pixels: one fit, every seed's row
    assert [p["seed"] for p in raw] == [0, 1] and raw[0]["test_error"] == raw[1]["test_error"] < 10.0, raw
    assert (raw[0]["C"], raw[0]["gamma"]) == (10.0, 1.0) and raw[0]["test_error"] not in [
        p["test_error"] for p in probe["per_replica"]
    ]
    single = svm_probe(net, digits, [0, 1], ProbeSettings(kind="svm", svm_gamma=(1.0,)))
    assert [p["candidates"] for p in single["per_replica"]] == [[], []]
    assert [p["test_error"] for p in single["per_replica"]] == [p["test_error"] for p in probe["per_replica"]]


def test_ctrl_c_stops_an_svm_fit_without_waiting_for_libsvm_and_its_errors_reach_the_caller():
    """A SIGINT that arrives during an SVM fit raises KeyboardInterrupt while libsvm is still computing, and the
    fit's process is killed (called in-process, libsvm would hold the interrupt until the fit returns, minutes on
    MNIST, keeping the run's lock); a fit that fails raises its own error in the caller, and one that succeeds
    returns its support vectors and errors."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4000, 100)), rng.integers(0, 10, 4000)  # labels of noise: a slow fit (~1-3 s)
    bar = Progress("svm", 1, 1, enabled=False)
    fits: list[multiprocessing.process.BaseProcess] = []

    def interrupt_the_fit() -> None:  # Ctrl-C 0.2 s into libsvm's work (into the fit's process, if it has one)
        for _ in range(100):
            fits.extend(p for p in multiprocessing.active_children() if p.name == "libsvm")
            if fits:
                break
            time.sleep(0.01)
        time.sleep(0.2)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # as Ctrl-C: Python raises KeyboardInterrupt

    # Python's own handler, as in a terminal: a suite started in the background (`pytest &`) inherits SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        signaller = threading.Thread(target=interrupt_the_fit)
        signaller.start()
        with pytest.raises(KeyboardInterrupt):
            _svm(x, y, 10.0, 0.01, [(x, y)], bar)
        signaller.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert fits, "the SVM was fit in the test's own process, where a signal waits for libsvm to return"
    assert fits[0].exitcode == -signal.SIGKILL, "the fit ran to its end: the interrupt waited for libsvm"
    assert not multiprocessing.active_children()
    with pytest.raises(ValueError, match="number of classes"):
        _svm(x[:50], np.zeros(50), 10.0, 0.01, [], bar)
    support, (train_error, test_error) = _svm(
        x[:500], y[:500] % 2, 10.0, 0.01, [(x[:500], y[:500] % 2), (x[500:1000], y[500:1000] % 2)], bar
    )
    assert 0 < support <= 500 and train_error < 5.0 and 30.0 < test_error < 70.0  # noise: memorised, not learned


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
def test_the_svms_process_dies_with_a_killed_parent():
    """SIGKILL on the process running a probe (it cannot pass the signal on) also ends the SVM fit it forked, at
    once: no orphan fits on for minutes."""
    script = (
        "import sys, threading, time, multiprocessing, numpy as np\n"
        "from targetprop.probe import _svm\n"
        "from targetprop.progress import Progress\n"
        "def report():\n"
        "    while not multiprocessing.active_children(): time.sleep(0.01)\n"
        "    print(multiprocessing.active_children()[0].pid, flush=True)\n"
        "threading.Thread(target=report, daemon=True).start()\n"
        "rng = np.random.default_rng(0)\n"
        "x, y = rng.standard_normal((20000, 100)), rng.integers(0, 10, 20000)\n"
        "_svm(x, y, 10.0, 0.01, [], Progress('svm', 1, 1, enabled=False))\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert _alive(child)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 30
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the SVM's process outlived its killed parent"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][0] != "Z"  # a zombie has ended (its exit not yet collected)
    except FileNotFoundError:
        return False


def test_finetuning_starts_from_the_encoder_and_its_control_from_random_weights(tmp_path):
    """The fine-tuned classifier x → f(x) → softmax starts from the auto-encoder's encoder (two encoders, two
    results), its control from random weights (the same control whatever the encoder); both learn digits."""
    digits = load_dataset("digits")
    cfg = dict(
        data="digits", rule="dtp-ae", arch="64-64-64", activation="sigmoid", output="sigmoid", task="reconstruct",
        tied_weights=True, input_noise=0.1, seeds=[0, 1], threads=1, out=str(tmp_path), **{"dtp-ae": {"lr": 1e-3}},
    )  # fmt: skip
    short = train(make_config(epochs=1, name="short", **cfg), dataset=digits, progress=False)
    longer = train(make_config(epochs=5, name="longer", **cfg), dataset=digits, progress=False)
    settings = ProbeSettings(kind="finetune", epochs=15, lr=3e-3)
    a, b = (finetune_probe(r.net, digits, [0, 1], settings) for r in (short, longer))
    assert a["control"]["per_replica"] == b["control"]["per_replica"]  # untouched by the auto-encoder
    assert a["per_replica"] != b["per_replica"]
    for part in (a, a["control"], b):
        errors = [p["test_error"] for p in part["per_replica"]]
        assert [p["seed"] for p in part["per_replica"]] == [0, 1]
        assert all(e < 10.0 for e in errors), (part["classifier"], errors)
    alone = finetune_probe(longer.net, digits, [0, 1], settings, control=False)  # a search's half of the work
    assert "control" not in alone
    assert alone["per_replica"] == b["per_replica"]  # streams keyed by seed: the controls beside them change nothing
    # so a second net takes the first one's control over when its seeds are the same, and trains its own otherwise
    taken = run_probe(longer.net, digits, [0, 1], settings, threads=1, control=a["control"])
    assert taken["per_replica"] == b["per_replica"] and taken["control"] == a["control"]
    other_seeds = {
        **a["control"],
        "per_replica": [{**row, "seed": row["seed"] + 10} for row in a["control"]["per_replica"]],
    }
    assert run_probe(longer.net, digits, [0, 1], settings, threads=1, control=other_seeds)["control"] == a["control"]
    other_net = {**a["control"], "net": "64-32-10 sigmoid"}  # a control of other layers than this encoder's
    assert run_probe(longer.net, digits, [0, 1], settings, threads=1, control=other_net)["control"] == a["control"]
    assert a["control"]["net"] == "64-64-10 sigmoid"
    with pytest.raises(ValueError, match="2 replicas but 1 seeds"):
        run_probe(longer.net, digits, [0], settings)


def test_a_classifiers_lr_decay_changes_its_training_and_nothing_else(tmp_path):
    """``ProbeSettings.lr_decay`` τ trains at ``lr / (1 + e/τ)``: a τ too long to matter gives the undecayed
    classifier's numbers exactly, a short one other numbers; the settings and the table's note name it."""
    digits = load_dataset("digits")
    cfg = dict(
        data="digits", rule="dtp-ae", arch="64-64-64", activation="sigmoid", output="sigmoid", task="reconstruct",
        tied_weights=True, input_noise=0.1, seeds=[0, 1], threads=1, out=str(tmp_path), epochs=2,
        **{"dtp-ae": {"lr": 1e-3}},
    )  # fmt: skip
    net = train(make_config(**cfg), dataset=digits, progress=False).net
    plain, never, decayed = (
        linear_probe(net, digits, [0, 1], ProbeSettings(epochs=5, lr=3e-2, lr_decay=tau)) for tau in (None, 1e12, 0.5)
    )
    assert never["per_replica"] == plain["per_replica"]
    assert decayed["per_replica"] != plain["per_replica"]
    assert "lr_decay" not in plain["settings"] and decayed["settings"]["lr_decay"] == 0.5
    assert "lr 0.03 / (1 + epoch/0.5)" in ProbeSettings(lr=3e-2, lr_decay=0.5).describe


def test_a_classifier_trains_with_the_runs_thread_count_and_gives_the_callers_back(tmp_path, monkeypatch):
    """``reproduce --threads 1`` holds for the classifiers it trains after the auto-encoder (they once ran on every
    core beside other runs): each mini-batch step sees one thread, and the caller's count comes back."""
    from targetprop.rules.bp import BP

    digits = load_dataset("digits")
    cfg = dict(
        data="digits", rule="dtp-ae", arch="64-32-64", activation="sigmoid", output="sigmoid", task="reconstruct",
        tied_weights=True, seeds=[0], threads=1, out=str(tmp_path), epochs=1,
    )  # fmt: skip
    net = train(make_config(**cfg), dataset=digits, progress=False).net
    seen, step = [], BP.step

    def counting_step(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return step(self, *args, **kwargs)

    monkeypatch.setattr(BP, "step", counting_step)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        finetune_probe(net, digits, [0], ProbeSettings(kind="finetune", epochs=1), threads=1)
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_linear_classifier_counts_the_hidden_units_that_no_input_moves():
    """Units pushed into saturation (off in replica 0, on in replica 1) send one value for every image: the linear
    classifier's result counts exactly those as near-constant, and the table gets a column with the count."""
    digits = load_dataset("digits")
    net = Network.from_spec("64-16-64", "sigmoid", "sigmoid", seeds=[0, 1], feedback="none")
    with torch.no_grad():
        net.layers[0].bias[0, :3] = -50.0  # dead
        net.layers[0].bias[1, 5] = 50.0  # always on
    probe = linear_probe(net, digits, [0, 1], ProbeSettings(epochs=1))
    assert [p["near_constant_units"] for p in probe["per_replica"]] == [3, 1] and probe["units"] == 16
    assert near_constant_units(torch.full((1, 10, 4), 0.5)) == [4]
    probe["test_error"] = {"mean": 1.0, "std": 0.0}
    probe["near_constant_units"] = {"mean": 2.0, "std": 1.4}
    columns = {key: label for key, label, _, _ in probe_columns(probe)}
    assert columns["near_constant_units"] == "near-constant hidden units"


def test_a_classifiers_input_noise_reaches_its_training_batches_only(monkeypatch):
    """``ProbeSettings.input_noise`` σ: every training mini-batch the classifier steps on is the clean batch plus
    σ·N(0, 1), from a stream of its own (the order of the mini-batches is the noiseless run's); evaluation reads
    clean inputs (a run's errors at σ = 0 are bit-identical to the settings without the field); the settings
    written to ``probe-finetune.json`` and the table's note name it. A seed's control draws the same noise as its
    fine-tuned net, so the two differ by their starting weights alone."""
    from targetprop.rules.bp import BP

    digits = load_dataset("digits")
    net = Network.from_spec("64-16-64", "sigmoid", "sigmoid", seeds=[0, 1], feedback="none")
    seen, step = [], BP.step

    def recording_step(self, x, y):
        seen.append((x.clone(), y.clone()))
        return step(self, x, y)

    monkeypatch.setattr(BP, "step", recording_step)
    clean = finetune_probe(net, digits, [0, 1], ProbeSettings(kind="finetune", epochs=2, lr=1e-2))
    clean_batches, seen[:] = list(seen), []
    noisy = finetune_probe(net, digits, [0, 1], ProbeSettings(kind="finetune", epochs=2, lr=1e-2, input_noise=0.5))
    assert len(seen) == len(clean_batches) > 1
    for (x_noisy, y_noisy), (x_clean, y_clean) in zip(seen, clean_batches, strict=True):
        assert torch.equal(y_noisy, y_clean)  # the same examples in the same order
        noise = x_noisy - x_clean
        assert abs(noise.std().item() - 0.5) < 0.05 and abs(noise.mean().item()) < 0.05
    noise = seen[0][0] - clean_batches[0][0]  # replicas: seeds 0, 1 fine-tuned, then 0, 1 from random weights
    assert not torch.equal(noise[0], noise[1])  # each seed draws its own noise
    assert torch.equal(noise[0], noise[2])  # and a seed's control sees the very inputs its fine-tuned net sees
    assert noisy["per_replica"] != clean["per_replica"]
    assert noisy["settings"]["input_noise"] == 0.5 and "input_noise" not in clean["settings"]
    assert ProbeSettings(kind="finetune", input_noise=0.0).to_dict() == ProbeSettings(kind="finetune").to_dict()
    assert "Gaussian noise σ = 0.5 on its training inputs" in ProbeSettings(input_noise=0.5).describe
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ConfigError, match="input_noise"):
            ProbeSettings(kind="finetune", input_noise=bad)


def test_the_fine_tuning_search_script_trains_every_setting_on_a_finished_run(tmp_path):
    """``benchmarks/probe_search.py`` (the search that chose the fine-tuning's input noise) reads a finished
    auto-encoder run's folder, trains the fine-tuned classifier and its control once per setting on the chosen
    replicas, and writes one CSV row per setting, part and seed; the numbers are those of ``finetune_probe``."""
    import csv

    digits = load_dataset("digits")
    cfg = dict(
        data="digits", rule="dtp-ae", arch="64-32-64", activation="sigmoid", output="sigmoid", task="reconstruct",
        tied_weights=True, seeds=[3, 4], threads=1, out=str(tmp_path), epochs=1, name="ae",
    )  # fmt: skip
    result = train(make_config(**cfg), dataset=digits, progress=False)
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "probe_search.py"
    out = tmp_path / "trials.csv"
    proc = subprocess.run(
        [sys.executable, str(script), str(result.run_dir.path), "--replicas", "1", "--noise", "0,0.3", "--epochs",
         "2", "--lr", "0.01", "--csv", str(out)],
        capture_output=True, text=True, timeout=CLI_TIMEOUT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(out.open()))
    assert [(r["noise"], r["part"], r["seed"]) for r in rows] == [
        ("0.0", "fine-tuned", "4"), ("0.0", "control", "4"), ("0.3", "fine-tuned", "4"), ("0.3", "control", "4"),
    ]  # fmt: skip
    direct = finetune_probe(
        result.net.select([1]), digits, [4], ProbeSettings(kind="finetune", epochs=2, lr=0.01, lr_decay=10.0), threads=1
    )
    assert float(rows[0]["test_error"]) == pytest.approx(direct["per_replica"][0]["test_error"], abs=1e-4)
    assert "noise 0.3 lr 0.01 decay 10 fine-tuned seed 4" in proc.stdout
