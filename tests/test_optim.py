"""The replica-batched optimisers of targetprop.optim against references, one learning rate per replica.

Replica r of a batched optimiser must follow, step for step, the reference optimiser (torch.optim, or the DTP
authors' centered RMSprop written out in numpy) run on replica r alone with learning rate lr[r].
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from targetprop import checkpoint
from targetprop.errors import ConfigError
from targetprop.optim import OPTIMIZERS, make_optimizer, update_blocks

LRS = [0.1, 0.01, 0.001]
R = len(LRS)
# (R, R) and (R,) catch a learning rate broadcast along the wrong dimension.
SHAPES = [(R, 4, 5), (R, 5), (R, R), (R,)]
STEPS = 6


def make_params(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=torch.float64) for shape in SHAPES]


def make_grads(steps: int = STEPS, seed: int = 1) -> list[list[torch.Tensor]]:
    """Random update directions, of varying scale so that the adaptive optimisers' statistics matter."""
    g = torch.Generator().manual_seed(seed)
    return [
        [
            torch.randn(shape, generator=g, dtype=torch.float64) * (1 + 2 * torch.rand((), generator=g))
            for shape in SHAPES
        ]
        for _ in range(steps)
    ]


# name, options given to make_optimizer, the matching torch.optim for one replica
TORCH_REFERENCES = {
    "sgd": ("sgd", {}, lambda ps, lr: torch.optim.SGD(ps, lr=lr)),
    "momentum": ("momentum", {}, lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9, dampening=0)),
    "momentum-0.5": ("momentum", {"momentum": 0.5}, lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.5)),
    "rmsprop": ("rmsprop", {}, lambda ps, lr: torch.optim.RMSprop(ps, lr=lr, alpha=0.99, eps=1e-8)),
    "rmsprop-alpha": (
        "rmsprop",
        {"alpha": 0.9, "eps": 1e-6},
        lambda ps, lr: torch.optim.RMSprop(ps, lr=lr, alpha=0.9, eps=1e-6),
    ),
    "adam": ("adam", {}, lambda ps, lr: torch.optim.Adam(ps, lr=lr)),
    "adam-betas": (
        "adam",
        {"beta1": 0.8, "beta2": 0.99, "eps": 1e-6},
        lambda ps, lr: torch.optim.Adam(ps, lr=lr, betas=(0.8, 0.99), eps=1e-6),
    ),
    # decoupled weight decay: AdamW's, and for SGD the same as an L2 term in the gradient
    "adam-weight-decay": ("adam", {"weight_decay": 0.5}, lambda ps, lr: torch.optim.AdamW(ps, lr=lr, weight_decay=0.5)),
    "sgd-weight-decay": ("sgd", {"weight_decay": 0.5}, lambda ps, lr: torch.optim.SGD(ps, lr=lr, weight_decay=0.5)),
}


@pytest.mark.parametrize("case", list(TORCH_REFERENCES))
def test_each_replica_matches_torch_optim_with_its_own_lr(case):
    name, options, reference = TORCH_REFERENCES[case]
    params = make_params()
    grads = make_grads()

    refs = []
    for r in range(R):
        ps = [p[r].clone().requires_grad_(True) for p in params]
        refs.append((ps, reference(ps, LRS[r])))

    options = dict(options)
    opt = make_optimizer(name, params, LRS, options, weight_decay=options.pop("weight_decay", 0.0))
    for step, gs in enumerate(grads):
        opt.step(gs)
        for r, (ps, ref) in enumerate(refs):
            for p, g in zip(ps, gs, strict=True):
                p.grad = g[r].clone()
            ref.step()
            for k, (mine, theirs) in enumerate(zip(params, ps, strict=True)):
                torch.testing.assert_close(
                    mine[r], theirs.detach(), rtol=1e-10, atol=1e-12, msg=f"step {step + 1}, replica {r}, param {k}"
                )
    # the replicas really moved, and apart: the learning rates made a difference
    start = make_params()
    moved = [(params[0][r] - start[0][r]).abs().max().item() for r in range(R)]
    assert moved[0] > moved[1] > moved[2] > 0


def centered_rmsprop_reference(theta, grads, lr, momentum=0.9, decay=0.95, eps=1e-3):
    """The DTP authors' update (their util.rms_prop), on one replica's parameters, in plain numpy."""
    theta = [t.copy() for t in theta]
    mean = [np.zeros_like(t) for t in theta]
    sq = [np.zeros_like(t) for t in theta]
    v = [np.zeros_like(t) for t in theta]
    trajectory = []
    for gs in grads:
        for k, g in enumerate(gs):
            mean[k] = decay * mean[k] + (1 - decay) * g
            sq[k] = decay * sq[k] + (1 - decay) * g**2
            v[k] = momentum * v[k] - lr * g / np.sqrt(sq[k] - mean[k] ** 2 + eps)
            theta[k] = theta[k] + v[k]
        trajectory.append([t.copy() for t in theta])
    return trajectory


def test_centered_rmsprop_matches_the_dtp_authors_update():
    params = make_params()
    grads = make_grads()
    expected = [
        centered_rmsprop_reference([p[r].numpy() for p in params], [[g[r].numpy() for g in gs] for gs in grads], LRS[r])
        for r in range(R)
    ]
    opt = make_optimizer("centered_rmsprop", params, LRS)
    for step, gs in enumerate(grads):
        opt.step(gs)
        for r in range(R):
            for k, p in enumerate(params):
                np.testing.assert_allclose(
                    p[r].numpy(),
                    expected[r][step][k],
                    rtol=1e-10,
                    atol=1e-12,
                    err_msg=f"step {step + 1}, replica {r}, param {k}",
                )


def test_scalar_lr_is_shared_by_all_replicas():
    params = make_params()
    opt = make_optimizer("sgd", params, 0.5)
    assert opt.lr.tolist() == [0.5] * R
    before = [p.clone() for p in params]
    gs = make_grads(1)[0]
    opt.step(gs)
    for p, b, g in zip(params, before, gs, strict=True):
        torch.testing.assert_close(p, b - 0.5 * g, rtol=1e-12, atol=1e-12)


def test_unknown_optimizer_is_a_config_error():
    with pytest.raises(ConfigError, match=r"unknown optimizer 'adagrad'.*sgd"):
        make_optimizer("adagrad", make_params(), 0.1)


@pytest.mark.parametrize(("name", "option"), [("adam", "momentum"), ("sgd", "momentum"), ("rmsprop", "beta1")])
def test_unknown_option_is_a_config_error(name, option):
    with pytest.raises(ConfigError, match=rf"{name}.*no option '{option}'"):
        make_optimizer(name, make_params(), 0.1, {option: 0.9})


def test_each_replica_decays_by_its_own_lr_and_weight_decay():
    """With zero update directions only the decay acts: ``θ_r ← (1 − lr_r λ_r) θ_r`` per step, and a replica
    with λ = 0 does not move."""
    params, decays = make_params(), [0.5, 2.0, 0.0]
    start = [p.clone() for p in params]
    opt = make_optimizer("sgd", params, LRS, weight_decay=decays)
    for _ in range(3):
        opt.step([torch.zeros_like(p) for p in params])
    for r in range(R):
        factor = (1 - LRS[r] * decays[r]) ** 3
        for p, p0 in zip(params, start, strict=True):
            torch.testing.assert_close(p[r], p0[r] * factor)
    assert torch.equal(params[0][2], start[0][2])


@pytest.mark.parametrize("decay", [-0.1, [0.1, float("nan"), 0.0]])
def test_negative_or_nan_weight_decay_is_a_config_error(decay):
    with pytest.raises(ConfigError, match=r"weight decay .* out of range"):
        make_optimizer("adam", make_params(), LRS, weight_decay=decay)


@pytest.mark.parametrize("lrs", [[0.1, 0.2], [0.1, 0.2, 0.3, 0.4]])
def test_wrong_number_of_per_replica_lrs_is_a_config_error(lrs):
    with pytest.raises(ConfigError, match=rf"{len(lrs)} values given for {R} replicas"):
        make_optimizer("momentum", make_params(), lrs)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_state_dict_round_trip_continues_identically(name):
    """Save after a few steps (through the checkpoint format), load into a fresh optimiser over a copy of the
    parameters, and go on: both must follow the uninterrupted trajectory exactly."""
    grads = make_grads(steps=8)
    params = make_params()
    opt = make_optimizer(name, params, LRS)
    for gs in grads[:4]:
        opt.step(gs)

    data = checkpoint.dumps({"params": params, "opt": opt.state_dict()})
    saved_params = copy.deepcopy(params)

    for gs in grads[4:]:  # the original goes on, after the save
        opt.step(gs)

    saved = checkpoint.loads(data)
    restored_params = [p.clone() for p in saved["params"]]
    for a, b in zip(restored_params, saved_params, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the moments come from the state dict, the learning rate from the configuration (a resumed run may change it)
    other_lr = make_optimizer(name, [p.clone() for p in restored_params], 1.0)
    other_lr.load_state_dict(saved["opt"])
    assert other_lr.lr.tolist() == [1.0] * len(LRS)
    restored = make_optimizer(name, restored_params, LRS)
    restored.load_state_dict(saved["opt"])
    for gs in grads[4:]:
        restored.step(gs)

    for a, b in zip(restored_params, params, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def flat_params(replicas: int, sizes: list[int], seed: int = 0) -> list[torch.Tensor]:
    """Parameters that tile one ``(R, P)`` float32 buffer, as a Network's do."""
    buffer = torch.randn(replicas, sum(sizes), generator=torch.Generator().manual_seed(seed))
    return list(buffer.split(sizes, dim=1))


@pytest.mark.parametrize(("budget", "n_blocks"), [(1000, 1), (80, 3), (37, 5), (10, 20), (1, 185)])
def test_update_blocks_tile_the_buffer_once(budget, n_blocks):
    """Whole rows grouped while they fit the budget, else equal pieces of each row; every element once."""
    rows, cols = 5, 37
    blocks = update_blocks(rows, cols, budget)
    cover = torch.zeros(rows, cols, dtype=torch.int64)
    for r, c in blocks:
        cover[r, c] += 1
        assert cover[r, c].numel() <= budget
    assert torch.equal(cover, torch.ones_like(cover))
    assert len(blocks) == n_blocks


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("budget", [7, 40, 80])  # pieces of rows; one row per block; two rows per block
@pytest.mark.parametrize("weight_decay", [0.0, 0.2])
def test_blocked_update_equals_whole_buffer_update_bitwise(name, budget, weight_decay):
    """Updating the flat buffer block by block (for the cache) changes no number of any step."""
    sizes, lrs = [20, 9, 8], [0.1, 0.03, 0.01, 0.003, 0.001]
    whole, blocked = flat_params(len(lrs), sizes), flat_params(len(lrs), sizes)
    opt_whole = make_optimizer(name, whole, lrs, weight_decay=weight_decay)
    opt_blocked = make_optimizer(name, blocked, lrs, weight_decay=weight_decay)
    assert opt_whole.is_flat and opt_blocked.is_flat
    opt_whole.block_elements, opt_blocked.block_elements = 10**9, budget
    g = torch.Generator().manual_seed(3)
    for _ in range(STEPS):
        grads = [torch.randn(p.shape, generator=g) for p in whole]
        opt_whole.step(grads)
        opt_blocked.step(grads)
    for a, b in zip(whole, blocked, strict=True):
        assert torch.equal(a, b)
    for key, tensors in opt_whole.state.items():
        assert all(torch.equal(a, b) for a, b in zip(tensors, opt_blocked.state[key], strict=True)), key


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("saved_flat", [True, False])
def test_state_moves_between_flat_and_separate_parameters(name, saved_flat):
    """A network's parameters tile flat buffers, or each has its own storage (built with ``flat=False``, for CUDA
    graphs). The two layouts update every number alike, and the moments saved under one resume under the other:
    the resumed run follows the uninterrupted one bit for bit."""
    sizes, lrs = [20, 9, 8], [0.1, 0.03, 0.01]
    flat = flat_params(len(lrs), sizes)
    apart = [p.clone() for p in flat]
    assert len({p.untyped_storage().data_ptr() for p in apart}) == len(apart)
    optimizers = {True: make_optimizer(name, flat, lrs, weight_decay=0.1), False: make_optimizer(name, apart, lrs)}
    optimizers[False].weight_decay = optimizers[True].weight_decay
    assert optimizers[True].is_flat and not optimizers[False].is_flat
    g = torch.Generator().manual_seed(4)
    steps = [[torch.randn(p.shape, generator=g) for p in flat] for _ in range(2 * STEPS)]
    for grads in steps[:STEPS]:
        for opt in optimizers.values():
            opt.step(grads)
    for a, b in zip(flat, apart, strict=True):
        assert torch.equal(a, b)

    saved = checkpoint.loads(checkpoint.dumps(optimizers[saved_flat].state_dict()))
    params = [p.clone() for p in (flat if saved_flat else apart)]
    if not saved_flat:  # resumed into the flat layout: parameters that tile one buffer again
        params = list(torch.cat(params, dim=1).split(sizes, dim=1))
    resumed = make_optimizer(name, params, lrs)
    resumed.weight_decay = optimizers[True].weight_decay
    assert resumed.is_flat is not saved_flat
    resumed.load_state_dict(saved)
    for grads in steps[STEPS:]:
        optimizers[saved_flat].step(grads)
        resumed.step(grads)
    for a, b in zip(flat if saved_flat else apart, params, strict=True):
        assert torch.equal(a, b)


def test_state_of_other_parameters_is_refused():
    """Moments that fit neither layout of these parameters stop the load with a clear error."""
    opt = make_optimizer("adam", flat_params(3, [20, 9]), 0.1)
    other = make_optimizer("adam", flat_params(3, [20, 8]), 0.1)
    other.step([torch.ones(3, 20), torch.ones(3, 8)])
    with pytest.raises(ValueError, match="does not fit these parameters"):
        opt.load_state_dict(other.state_dict())
