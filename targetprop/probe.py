"""How good an auto-encoder's features are for classification: classifiers trained on its learned code.

The DTP paper reports, for its auto-encoder trained by DTP, a test error on MNIST (1.35 %) without saying how the
classifier on the learned features was trained. Two protocols, both choosing their epoch on the validation split:

- ``linear`` (:func:`linear_probe`): a softmax (multinomial logistic) regression on the frozen code ``h = f(x)``,
  trained on the cross-entropy (one layer: back-propagation has nothing to propagate). It measures the features
  and nothing else.
- ``finetune`` (:func:`finetune_probe`): the encoder with a softmax layer on top, ``x → f(x) → softmax``, every
  layer trained by back-propagation on the labels, starting from the auto-encoder's weights: the protocol of the
  auto-encoder papers of the time (pre-training, then supervised fine-tuning; Vincent et al. 2010). It measures the
  features *and* the supervised training, so it also trains the same net from its random initialisation, with the
  same settings (the ``control``): what the auto-encoder's weights add is the difference.
- ``svm`` (:func:`svm_probe`): a support-vector machine with a Gaussian (RBF) kernel on the frozen code, the other
  measure of learned features in the denoising auto-encoder papers the DTP paper follows (Vincent et al. 2010 fit
  linear and RBF SVMs on each layer's representation). Its ``C`` and kernel width are chosen on the validation
  split from fits on a subset of the training split; the chosen pair is then fit on the whole training split. A
  kernel machine learns no features of its own, but it is nonlinear in them: it asks whether the code separates
  the classes at all, where the linear protocol asks whether it separates them by planes.

The linear protocol also counts, per replica, the hidden units whose activation hardly varies over the test
images (:func:`near_constant_units`): dead, saturated or fixed units, which carry nothing for any classifier.

Every replica (seed) of the auto-encoder gets its own classifier, initialised from its own seed, all trained
side by side as replicas of one :class:`~targetprop.nets.Network`.
"""

from __future__ import annotations

import ctypes
import math
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import torch
from torch import Tensor

from targetprop.data import Dataset
from targetprop.errors import ConfigError
from targetprop.nets import Network
from targetprop.progress import Progress, mean_std
from targetprop.replicas import ReplicaRandom
from targetprop.rules.bp import BP, BPConfig
from targetprop.subnormals import flushed
from targetprop.threads import run_threads


@dataclass(frozen=True)
class ProbeSettings:
    """A classifier on the learned code: which protocol (``kind``), and its optimiser, learning rate (decayed as
    ``lr / (1 + e / lr_decay)`` in epoch ``e`` from 0 when ``lr_decay`` is set), epochs, mini-batch size and the
    noise on its training inputs."""

    epochs: int = 50
    lr: float = 1e-3
    optimizer: str = "adam"
    batch_size: int = 100
    kind: Literal["linear", "finetune", "svm"] = "linear"
    lr_decay: float | None = None
    input_noise: float = 0.0
    """``linear``, ``finetune``: σ of the Gaussian noise added to each training mini-batch's inputs,
    ``x + σ·N(0, 1)`` (the fine-tuned net's pixels, the linear classifier's code), drawn anew every epoch from each
    replica's own stream; validation and test inputs are clean. For ``finetune`` it is the auto-encoder's own
    corruption carried into the supervised training (denoising fine-tuning), applied to the control alike."""
    svm_c: tuple[float, ...] = (10.0,)
    """``svm``: the values of the SVM's ``C`` tried (with every ``svm_gamma``)."""
    svm_gamma: tuple[float, ...] = (2.0, 3.0, 4.0)
    """``svm``: the kernel widths tried, ``exp(−γ ||a − b||²)`` with ``γ`` in units of ``1 / (H var(h))`` (``H``
    code units, ``var`` over the training code's entries: scikit-learn's ``gamma="scale"`` is 1)."""
    svm_subset: int = 10_000
    """``svm``: the first this many training examples fit the candidates that the validation split chooses among."""
    svm_train: int | None = None
    """``svm``: the chosen candidate is fit on the first this many training examples (all of them when None)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.input_noise) and self.input_noise >= 0):
            raise ConfigError(f"a classifier's input_noise is a σ ≥ 0, not {self.input_noise!r}")

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "svm":  # trained by no optimiser: the fields of the other kinds do not apply
            return {
                "kind": self.kind,
                "svm_c": list(self.svm_c),
                "svm_gamma": list(self.svm_gamma),
                "svm_subset": self.svm_subset,
                **({} if self.svm_train is None else {"svm_train": self.svm_train}),
            }
        settings = {
            "kind": self.kind,
            "epochs": self.epochs,
            "lr": self.lr,
            "optimizer": self.optimizer,
            "batch_size": self.batch_size,
        }
        if self.lr_decay is not None:
            settings["lr_decay"] = self.lr_decay
        if self.input_noise > 0:  # absent when 0, so that results written before the field still match
            settings["input_noise"] = self.input_noise
        return settings

    @property
    def file(self) -> str:
        """Where a method's run directory keeps this classifier's result."""
        return "probe.json" if self.kind == "linear" else f"probe-{self.kind}.json"

    @property
    def label(self) -> str:
        """Its column heading in the table."""
        return {"linear": "classifier test error %", "finetune": "fine-tuned test error %"}.get(
            self.kind, "RBF SVM test error %"
        )

    @property
    def control_label(self) -> str:
        """The heading of the control's column (the same classifier without the auto-encoder)."""
        return "SVM on the raw pixels %" if self.kind == "svm" else "the same from random weights %"

    @property
    def control_note(self) -> str:
        """What the control measures, for the table's notes."""
        if self.kind == "svm":
            return (
                "the same SVM, chosen the same way, on the raw pixels x instead of the code: what the learned "
                "features add (one fit, the same for every seed)"
            )
        return (
            "the same net trained the same way from its random initialisation (glorot): what the training "
            "on labels gives without the auto-encoder"
        )

    @property
    def short(self) -> str:
        """What is trained, in a few words (for a progress line)."""
        if self.kind == "svm":
            return f"RBF SVM on the learned code ({len(self.svm_c) * len(self.svm_gamma)} candidates)"
        return f"{self.kind} classifier on the learned code ({self.epochs} epochs)"

    @property
    def describe(self) -> str:
        """One line for the table's notes."""
        if self.kind == "svm":
            return (
                "an RBF-kernel SVM (scikit-learn's SVC) on each seed's frozen code h = f(x) after the last epoch, "
                f"C in {_values(self.svm_c)} and γ in {_values(self.svm_gamma)} / (H var(h)) chosen on the "
                f"validation split from fits on {self.svm_subset} training examples, then fit on "
                + ("all of them" if self.svm_train is None else f"the first {self.svm_train}")
                + " (targetprop/probe.py)"
            )
        what = (
            "a softmax regression on each seed's frozen code h = f(x) after the last epoch"
            if self.kind == "linear"
            else "the encoder with a softmax layer on top, every layer trained by back-propagation on the labels "
            "from the auto-encoder's weights"
        )
        lr = f"lr {self.lr:g}" + ("" if self.lr_decay is None else f" / (1 + epoch/{self.lr_decay:g})")
        noise = f", Gaussian noise σ = {self.input_noise:g} on its training inputs" if self.input_noise > 0 else ""
        return (
            f"{what} ({self.optimizer}, {lr}, {self.epochs} epochs, batch {self.batch_size}{noise}), at its best "
            "validation epoch (targetprop/probe.py)"
        )


def run_probe(
    net: Network,
    dataset: Dataset,
    seeds: Sequence[int],
    settings: ProbeSettings,
    progress: bool = False,
    threads: int | str = "auto",
    control: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The classifier of ``settings.kind`` on ``net``'s learned code, one per replica (seed); with ``progress``, a
    bar and a line per epoch on stderr; on the CPU with ``threads`` (the run key: a number, or "auto").

    ``control``: the ``control`` part of an earlier result of the same settings on the same data, for another net.
    A control depends on the data, the settings and the seeds, never on the net's weights, so it is taken over
    instead of trained again: the SVM on the raw pixels always (one fit serves every seed), the fine-tuned net's
    control from random weights when it has the same seeds (their streams are keyed by seed) and the same layers
    (:func:`finetuned_net`)."""
    if len(seeds) != net.replicas:
        raise ValueError(f"the net has {net.replicas} replicas but {len(seeds)} seeds were given: one seed per replica")
    with flushed():  # as in the trainer: subnormal floats slow the CPU (targetprop.subnormals)
        if settings.kind == "svm":
            pixels = None if control is None else pixel_svm_of(control)
            return svm_probe(net, dataset, seeds, settings, progress=progress, pixel_svm=pixels)
        if settings.kind == "finetune":
            take_over = (
                control is not None
                and control.get("net") == finetuned_net(net, dataset)
                and [row["seed"] for row in control["per_replica"]] == list(seeds)
            )
            result = finetune_probe(net, dataset, seeds, settings, progress, threads, control=not take_over)
            return {**result, "control": control} if take_over else result
        return linear_probe(net, dataset, seeds, settings, progress=progress, threads=threads)


@torch.no_grad()
def encoder_features(net: Network, x: Tensor, chunk: int = 10_000) -> Tensor:
    """The code ``h = f_1(x)`` of the first layer for every replica: ``(R, N, H)``."""
    encoder = net.layers[0]
    dtype = encoder.weight.dtype
    return torch.cat(
        [encoder(x[i : i + chunk].to(dtype).expand(net.replicas, -1, -1)) for i in range(0, len(x), chunk)], 1
    )


NEAR_CONSTANT_STD = 0.02
"""A hidden unit whose activation has a standard deviation below this over the test images counts as near-constant
(for sigmoid units, whose range is [0, 1], 2 % of it)."""


@torch.no_grad()
def near_constant_units(code: Tensor, std: float = NEAR_CONSTANT_STD) -> list[int]:
    """Per replica, how many units of the code ``(R, N, H)`` have a standard deviation below ``std`` over the ``N``
    inputs: units that send about the same value whatever the input (dead, saturated or never trained)."""
    return (code.std(dim=1) < std).sum(-1).tolist()


@torch.no_grad()
def _errors(classifier: Network, inputs: Tensor, labels: Tensor, chunk: int = 10_000) -> Tensor:
    """Per-replica error % of the classifier on ``inputs``: ``(R, N, n)`` one per replica, or ``(N, n)`` shared."""
    n, wrong = inputs.shape[-2], torch.zeros(classifier.replicas, device=inputs.device)
    for i in range(0, n, chunk):
        part = inputs[..., i : i + chunk, :]
        logits = classifier(part if part.dim() == 3 else part.expand(classifier.replicas, -1, -1))
        wrong += (logits.argmax(-1) != labels[i : i + chunk]).sum(-1).float()
    return 100.0 * wrong / n


def linear_probe(
    net: Network,
    dataset: Dataset,
    seeds: Sequence[int],
    settings: ProbeSettings,
    progress: bool = False,
    threads: int | str = "auto",
) -> dict[str, Any]:
    """Train one softmax regression per replica on the frozen features of ``net``'s encoder; per replica, the
    validation and test error % of the epoch with the lowest validation error, that epoch, and how many of the
    features are near-constant on the test images (:func:`near_constant_units`)."""
    train, valid, test = (encoder_features(net, split.x) for split in (dataset.train, dataset.valid, dataset.test))
    replicas, width = net.replicas, train.shape[-1]
    classifier = Network.from_spec(
        [width, dataset.n_classes],
        [],
        "softmax",
        seeds=seeds,
        init="glorot",
        feedback="none",
        device=train.device,
        dtype=train.dtype,
    )
    parts = {"linear classifier": slice(0, replicas)}
    best = _train_classifier(classifier, (train, valid, test), dataset, seeds, settings, parts, progress, threads)
    per_replica = _per_replica(best, seeds, range(replicas))
    for row, count in zip(per_replica, near_constant_units(test), strict=True):
        row["near_constant_units"] = count
    return {
        "classifier": "softmax regression on the frozen code h = f(x)",
        "settings": settings.to_dict(),
        "units": width,
        "per_replica": per_replica,
    }


def finetuned_net(net: Network, dataset: Dataset) -> str:
    """The layers of the classifier :func:`finetune_probe` trains on ``net``'s encoder, e.g. ``784-1000-10 sigmoid``:
    what its control from random weights depends on besides the seeds and the settings."""
    encoder = net.layers[0]
    return f"{dataset.n_inputs}-{encoder.n_out}-{dataset.n_classes} {encoder.unit.name}"


def finetune_probe(
    net: Network,
    dataset: Dataset,
    seeds: Sequence[int],
    settings: ProbeSettings,
    progress: bool = False,
    threads: int | str = "auto",
    control: bool = True,
) -> dict[str, Any]:
    """Per replica, the net ``x → f(x) → softmax`` (``f`` the auto-encoder's encoder, its unit and weights)
    trained by back-propagation on the labels; and, as the ``control``, the same net trained the same way from
    its own random initialisation (glorot). Both report the validation and test error % of their epoch of lowest
    validation error. The two sets of nets train side by side as the ``2R`` replicas of one network.

    ``control=False`` trains the fine-tuned nets alone (half the work, for a search of the settings) and leaves
    the ``control`` key out. Every replica's random streams are keyed by its seed, so the fine-tuned nets'
    figures do not depend on whether their controls trained beside them."""
    encoder = net.layers[0]
    device, dtype = encoder.weight.device, encoder.weight.dtype
    replicas, width = net.replicas, encoder.n_out
    all_seeds = [*seeds, *seeds] if control else list(seeds)
    classifier = Network.from_spec(
        [dataset.n_inputs, width, dataset.n_classes],
        [encoder.unit.name],
        "softmax",
        seeds=all_seeds,
        init="glorot",
        feedback="none",
        device=device,
        dtype=dtype,
    )
    with torch.no_grad():  # the first R replicas start from the auto-encoder; the others stay as initialised
        classifier.layers[0].weight[:replicas] = encoder.weight
        classifier.layers[0].bias[:replicas] = encoder.bias
    splits = tuple(split.x.to(device=device, dtype=dtype) for split in (dataset.train, dataset.valid, dataset.test))
    parts = {"fine-tuned": slice(0, replicas)}
    if control:
        parts["from random weights"] = slice(replicas, 2 * replicas)
    best = _train_classifier(classifier, splits, dataset, all_seeds, settings, parts, progress, threads)
    result: dict[str, Any] = {
        "classifier": "the encoder with a softmax layer on top, fine-tuned by back-propagation",
        "settings": settings.to_dict(),
        "per_replica": _per_replica(best, seeds, range(replicas)),
    }
    if control:
        result["control"] = {
            "classifier": "the same net trained the same way from its random initialisation (glorot)",
            "net": finetuned_net(net, dataset),
            "per_replica": _per_replica(best, seeds, range(replicas, 2 * replicas)),
        }
    return result


def svm_probe(
    net: Network,
    dataset: Dataset,
    seeds: Sequence[int],
    settings: ProbeSettings,
    progress: bool = False,
    pixel_svm: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Per replica, an RBF-kernel SVM on the frozen code of ``net``'s encoder: every pair of ``settings.svm_c``
    and ``settings.svm_gamma`` fit on the first ``svm_subset`` training examples and scored on the validation
    split; the pair with the lowest validation error (the first of equals) fit on the whole training split (or its
    first ``svm_train``); its validation and test error %, with every candidate's score. One pair is fit on the
    whole split directly. scikit-learn's SVC runs on one core (libsvm's solver is single-threaded).

    The ``control`` is the same SVM, chosen the same way, on the raw inputs: one fit, whose result every seed gets.
    It depends on the data and ``settings`` alone, not on the net, so a caller that probes several nets passes the
    first one's (:func:`pixel_svm_of` of its ``control``) as ``pixel_svm`` and it is not fit again."""
    import sklearn.svm  # noqa: F401  (loaded once here: every forked fit inherits it; each child took 1.8 s)

    splits = (dataset.train, dataset.valid, dataset.test)
    codes = [encoder_features(net, split.x).double().cpu().numpy() for split in splits]
    labels = [split.y.cpu().numpy() for split in splits]
    candidates = len(settings.svm_c) * len(settings.svm_gamma)
    fits = candidates + (candidates > 1)  # the candidates on the subset, then the chosen one on all
    bar = Progress(f"RBF SVM ×{net.replicas} + raw pixels", net.replicas + (pixel_svm is None), fits, enabled=progress)
    per_replica = []
    try:
        for r, seed in enumerate(seeds):
            row = {"seed": seed, **_chosen_svm([code[r] for code in codes], labels, settings, bar)}
            per_replica.append(row)
            bar.epoch_done(
                f"RBF SVM seed {seed}: C {row['C']:g}, γ {row['gamma']:g} / (H var(h)): valid "
                f"{row['valid_error']:.2f}% test {row['test_error']:.2f}%"
            )
        raw = pixel_svm
        if raw is None:
            pixels = [split.x.double().cpu().numpy() for split in splits]
            raw = _chosen_svm(pixels, labels, settings, bar)
            bar.epoch_done(f"RBF SVM on the raw pixels: valid {raw['valid_error']:.2f}% test {raw['test_error']:.2f}%")
    finally:
        bar.close()
    return {
        "classifier": "RBF-kernel SVM on the frozen code h = f(x)",
        "settings": settings.to_dict(),
        "units": codes[0].shape[-1],
        "per_replica": per_replica,
        "control": {
            "classifier": "the same SVM on the raw pixels x",
            "per_replica": [{"seed": seed, **raw} for seed in seeds],
        },
    }


def pixel_svm_of(control: dict[str, Any]) -> dict[str, Any]:
    """The SVM on the raw pixels from the ``control`` part of an :func:`svm_probe` result, as ``svm_probe`` takes it
    back (``pixel_svm``)."""
    return {k: v for k, v in control["per_replica"][0].items() if k != "seed"}


def _chosen_svm(inputs: Sequence[Any], labels: Sequence[Any], settings: ProbeSettings, bar: Progress) -> dict[str, Any]:
    """The SVM of :func:`svm_probe` on one set of (train, valid, test) inputs: its (C, γ), validation and test
    error %, support vectors, and the candidates' validation errors (none where the grid holds one pair)."""
    (train, valid, test), (y_train, y_valid, y_test) = inputs, labels
    unit = 1.0 / (train.shape[1] * train.var())  # scikit-learn's gamma="scale"
    grid = [(c, g) for c in settings.svm_c for g in settings.svm_gamma]
    tried = []
    if len(grid) > 1:
        n = settings.svm_subset
        for c, g in grid:
            _, (valid_error,) = _svm(train[:n], y_train[:n], c, g * unit, [(valid, y_valid)], bar)
            tried.append({"C": c, "gamma": g, "valid_error": valid_error})
        best = min(tried, key=lambda t: t["valid_error"])
        c, g = best["C"], best["gamma"]
    else:
        c, g = grid[0]
    n = settings.svm_train
    support, (valid_error, test_error) = _svm(
        train[:n], y_train[:n], c, g * unit, [(valid, y_valid), (test, y_test)], bar
    )
    return {
        "C": c,
        "gamma": g,
        "gamma_value": g * unit,
        "support_vectors": support,
        "valid_error": valid_error,
        "test_error": test_error,
        "candidates": tried,
    }


def _svm(
    x: Any, y: Any, c: float, gamma: float, scored: Sequence[tuple[Any, Any]], bar: Progress
) -> tuple[int, list[float]]:
    """:func:`_fit_and_score` in a process of its own (:func:`_interruptible`), one step of ``bar``."""
    result = _interruptible(_fit_and_score, x, y, c, gamma, scored)
    bar.advance()
    return result


def _fit_and_score(
    x: Any, y: Any, c: float, gamma: float, scored: Sequence[tuple[Any, Any]]
) -> tuple[int, list[float]]:
    """An RBF-kernel SVC fit on ``(x, y)``: its number of support vectors and its error % on each ``(x, y)`` of
    ``scored``."""
    from sklearn.svm import SVC

    svm = SVC(C=c, gamma=gamma, cache_size=2000).fit(x, y)
    return int(svm.n_support_.sum()), [100.0 * float((svm.predict(xs) != ys).mean()) for xs, ys in scored]


T = TypeVar("T")
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


def _interruptible(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a forked child process, so that Ctrl-C (or SIGTERM) stops the caller at once and kills it.

    libsvm's fit and predict take minutes on MNIST and cannot be interrupted: a signal is handled only between the
    main thread's Python instructions, so called in-process they would hold an interrupted run (and its run
    directory's lock) until they return. A thread is no way out: an interpreter that exits while a thread is inside
    libsvm can crash. The child inherits the inputs by ``fork`` (nothing is copied through a pipe but the small
    result); its exception, if any, is raised here. It holds no run directory's lock (:mod:`targetprop.lock`
    closes a forked child's copies) and dies with its parent. Where ``fork`` does not exist (Windows) ``fn`` runs
    in-process."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return fn(*args)
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_send_outcome, args=(send, fn, args, os.getpid()), name="libsvm", daemon=True)
    child.start()
    send.close()
    try:
        while not receive.poll(0.1):  # wakes to handle signals however they arrive
            pass
        ok, value = receive.recv()
    except EOFError:
        child.join()
        raise RuntimeError(f"the process fitting the SVM died without an answer (exit code {child.exitcode})") from None
    except BaseException:  # Ctrl-C, SIGTERM: stop the fit, which would run on to its end
        child.kill()
        child.join()
        raise
    finally:
        receive.close()
    child.join()
    if not ok:
        raise value
    return value


def _send_outcome(send: Any, fn: Callable[..., Any], args: tuple[Any, ...], parent: int) -> None:
    """The child's side of :func:`_interruptible`. Ctrl-C reaches the whole process group; the parent answers it
    (and kills this process), so here it is ignored rather than printed as a second traceback. On Linux the child
    also dies with its parent, however the parent ends (a SIGKILL it cannot pass on), instead of fitting on for
    minutes with nobody to answer."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)
    try:
        outcome = (True, fn(*args))
    except Exception as error:  # raised again in the parent by _interruptible
        outcome = (False, error)
    send.send(outcome)


def _values(values: Sequence[float]) -> str:
    return "{" + ", ".join(f"{v:g}" for v in values) + "}"


def _train_classifier(
    classifier: Network,
    splits: tuple[Tensor, Tensor, Tensor],
    dataset: Dataset,
    seeds: Sequence[int],
    settings: ProbeSettings,
    parts: dict[str, slice],
    progress: bool = False,
    threads: int | str = "auto",
) -> dict[str, list[Any]]:
    """Train ``classifier`` by back-propagation on ``splits`` (train, valid, test inputs: ``(N, n)`` shared by
    every replica, or ``(R, N, n)`` one per replica) with the dataset's labels; per replica, the lowest validation
    error, the test error at that epoch, and the epoch. ``parts`` names groups of replicas for the progress lines
    (e.g. the fine-tuned classifiers and their controls). On the CPU it uses ``threads`` as training does
    (:class:`~targetprop.threads.ThreadPolicy`) and gives the caller's thread count back."""
    train, valid, test = splits
    device, replicas = train.device, classifier.replicas
    rule = BP(
        classifier,
        BPConfig(lr=settings.lr, optimizer=settings.optimizer, lr_decay=settings.lr_decay),
        ReplicaRandom(seeds, "probe", device),
    )
    order_rng = rule.noise  # the mini-batch order (BP draws nothing else)
    input_rng = ReplicaRandom(seeds, "probe-input", device) if settings.input_noise > 0 else None
    labels = dataset.train.y.to(device)
    rows = torch.arange(replicas, device=device).unsqueeze(1)
    n = train.shape[-2]
    best: dict[str, list[Any]] = {
        "valid": [math.inf] * replicas,
        "test": [math.nan] * replicas,
        "epoch": [0] * replicas,
    }
    label = next(iter(parts)) if len(parts) == 1 else f"{next(iter(parts))} classifier"
    bar = Progress(f"{label} ×{replicas}", settings.epochs, math.ceil(n / settings.batch_size), enabled=progress)
    with run_threads(threads, device) as cpu, closing(bar):
        for epoch in range(1, settings.epochs + 1):
            rule.on_epoch_start(epoch - 1)  # the epoch's learning rate
            order = order_rng.permutations(n)
            for start in range(0, n, settings.batch_size):
                idx = order[:, start : start + settings.batch_size]
                x = train[rows, idx] if train.dim() == 3 else train[idx]  # (R, B, n): a copy either way
                if input_rng is not None:
                    x.add_(input_rng.normal(x.shape[1:], x.dtype), alpha=settings.input_noise)
                rule.step(x, labels[idx])
                bar.advance()
                if cpu is not None:
                    cpu.tick()
            valid_err = _errors(classifier, valid, dataset.valid.y.to(device)).tolist()
            test_err = _errors(classifier, test, dataset.test.y.to(device)).tolist()
            for r in range(replicas):
                if valid_err[r] < best["valid"][r]:
                    best["valid"][r], best["test"][r], best["epoch"][r] = valid_err[r], test_err[r], epoch
            bar.epoch_done(
                f"{label} epoch {epoch}/{settings.epochs}: "
                + "; ".join(
                    (f"{name} " if len(parts) > 1 else "")
                    + f"valid {mean_std(valid_err[part])}% test {mean_std(test_err[part])}%"
                    for name, part in parts.items()
                )
            )
    return best


def _per_replica(best: dict[str, list[Any]], seeds: Sequence[int], replicas: Sequence[int]) -> list[dict[str, Any]]:
    return [
        {"seed": s, "best_epoch": best["epoch"][r], "valid_error": best["valid"][r], "test_error": best["test"][r]}
        for s, r in zip(seeds, replicas, strict=True)
    ]
