"""Hyper-parameter sweeps with Optuna: ``targetprop sweep SPACE.toml``.

Target-propagation methods are sensitive to their hyper-parameters; the DTP authors drew about 20 random
configurations per experiment (log-uniform η̂ ∈ [1, 100], forward lr ∈ [1e-4, 1e-2], inverse lr ∈ [1e-5, 1e-3]).
A space file says what to search and how (the base run's keys come first: TOML puts the keys that follow a
``[table]`` header into that table)::

    # The base run: the keys of a `targetprop train --config` file, or `preset = "mnist-paper"` (a preset name
    # or a TOML file), or `experiment = "stochastic"` with `method = "dtp"` (the settings that method of
    # `targetprop reproduce` runs with), whose keys the ones below override.
    rule = "dtp"
    data = "digits"
    epochs = 20
    seeds = 0                     # one seed: every trial starts from it, so trials differ only in what is searched

    [dtp]
    noise = 0.36

    [sweep]                       # every key has a default (shown where it is not the value)
    sampler = "random"            # "random", or "tpe" (Optuna's tree-structured Parzen estimator; default)
    trials = 20                   # in all (20); a resumed sweep runs only the missing ones
    replicas = 4                  # trials trained together as the replicas of one network, in one process (1)
    processes = 2                 # local worker processes, or groups in flight on a Ray cluster (1)
    metric = "best_valid_error"   # minimised; also "valid_error" (last epoch) or "train_error"
    seed = 0                      # the sampler's seed
    # threads = 1                 # torch threads per group (default: CPUs // processes)
    # startup_trials = 10         # TPE: random trials before the model takes over
    # name = "dtp-digits"         # sweep directory name (default: the space file's name)
    # out = "runs/sweeps"         # its parent folder (default: <out of the base run>/sweeps)

    # One entry per searched key, "RULE.KEY" (a key of the run's rule) or a run key such as "epochs":
    # {low, high} with optional log = true and step, or {choices = [...]}. Ints are drawn for int keys.
    [space]
    "dtp.lr" = {low = 1e-4, high = 1e-2, log = true}
    "dtp.lr_feedback" = {low = 1e-5, high = 1e-3, log = true}
    "dtp.eta_hat" = {low = 1, high = 100, log = true}
    # "dtp.noise" = {low = 0.1, high = 0.5}
    # "dtp.schedule" = {choices = ["alternating", "parallel"]}

**Replicas.** The trainer trains R replicas of a network in batched tensors, and the rule fields typed ``Scalar``
(``lr``, ``lr_feedback``, ``eta_hat``, the corruption ``noise`` and ``noise_decay``, ``lr_decay``,
``weight_decay``) take one value per replica. When every searched key is such a field, the
sweep asks Optuna for ``replicas`` trials at once and trains them as one run whose per-replica fields list the
trials' values; replica r of that run is trial r, exactly as if it ran alone (``tests/test_replicas.py``). Every
replica starts from the base seed. If any searched key is not per-replica (``epochs``, ``arch``, ``schedule``, ...)
each trial runs alone. A trial whose replica diverges gets the value +inf (TPE learns to avoid the region).

**Where groups run.** ``processes`` groups at a time: in this process when it is 1, else in spawned worker
processes, each with ``torch.set_num_threads(CPUs // processes)`` (oversubscribed threads slow tiny runs
tenfold; CPUs: those this process may use, or OMP_NUM_THREADS if lower); or, with ``--ray-address HOST:PORT``, as
Ray tasks on a running cluster, each asking for ``threads`` CPUs (default: the cluster's CPUs // processes;
targetprop must be installed on every node, and the data where ``data_dir`` says). Optuna is only ever called from
this process; TPE runs with ``constant_liar`` so that trials asked while others run are spread apart. Before
anything is written, every value at the edges of the space is checked to make a valid run (locally, its network
is built on the loaded data).

**The sweep directory** (``<out>/sweeps/<name>`` by default)::

    space.toml      the space, resolved: the preset or experiment merged in and every run default the trials
                    relied on written out; `targetprop sweep --resume DIR` reads it
    study.log       the Optuna study (a journal file: no database server)
    trials.csv      one row per trial, best first; written again as each group starts (its trials "running")
                    and ends
    runs/t0004-0007 the run directory of trials 4 to 7 (replica r is trial 4 + r); runs/t0004 for a lone trial

**Resume.** Started again on the same directory (same space file, or ``--resume DIR``), a sweep keeps the trials
that finished, finishes the ones that were interrupted (their run continues from its last checkpoint, under the
same trial numbers) and asks for new ones only up to ``trials``; ``--trials N`` raises the total. Only the
execution keys (``trials``, ``replicas``, ``processes``, ``threads``, where it runs) may change: a space that
searches differently is refused. The sampler is reseeded with the number of trials already asked, so a resumed
random sweep does not replay its first draws. Interrupted trials are told their result when their run ends, rather
than failed and enqueued again (Optuna's usual retry), so they keep their number and their run directory. Diverged
and failed trials count towards ``trials``. One sweep process works on a directory at a time (it holds ``.lock``);
Ctrl-C, or a worker process that dies, stops the sweep with the command that resumes it.

**The trials by epoch.** ``targetprop sweep --resume DIR --at-epoch 10 --at-epoch 50`` on a finished sweep trains
nothing and prints its table with each trial's validation error at those epochs (read from its run's
``metrics.jsonl``; "-" where that epoch was not evaluated). ``targetprop inspect DIR [--at-epoch N]`` prints
the same table without the lock, so while the sweep runs too: a running trial with its last validation error.
"""

from targetprop.sweep.groups import GroupJob, GroupResult, LocalExecutor, RayExecutor, run_group
from targetprop.sweep.space import Param, Space, SweepSettings, bundled_space_names, load_space
from targetprop.sweep.study import (
    Group,
    Sweep,
    check_sweep_dir,
    read_sweep_dir,
    read_trials_csv,
    sweep_dir_for,
    trials_table,
)

__all__ = [
    "Group",
    "GroupJob",
    "GroupResult",
    "LocalExecutor",
    "Param",
    "RayExecutor",
    "Space",
    "Sweep",
    "SweepSettings",
    "bundled_space_names",
    "check_sweep_dir",
    "load_space",
    "read_sweep_dir",
    "read_trials_csv",
    "run_group",
    "sweep_dir_for",
    "trials_table",
]
