"""Tests of targetprop.data on real MNIST / Fashion-MNIST files and on small CIFAR-format files."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import io
import pickle
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import CLI_TIMEOUT, cli_env, command, error_line, read_jsonl, show

import targetprop.data as data
from targetprop.data import (
    CIFAR10_SPEC,
    DATASETS,
    MNIST_SPEC,
    CifarSpec,
    DataFile,
    Dataset,
    load_dataset,
    parse_idx,
    resolve_data_dir,
)
from targetprop.errors import DataError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MNIST_DIR = DATA / "mnist"
MNIST_FILES = [file.filename for file in MNIST_SPEC.files]

# Class counts of the official files, from ../shared/data/mnist/SOURCES.md.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own TARGETPROP_DATA / TARGETPROP_MIRROR must not change what the tests see."""
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.delenv(data.MIRROR_ENV, raising=False)


@contextmanager
def raises_data_error(*fragments: str) -> Iterator[pytest.ExceptionInfo[DataError]]:
    """Expect a one-line DataError whose message contains every fragment."""
    with pytest.raises(DataError) as info:
        yield info
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve `directory` over HTTP on 127.0.0.1 in a thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def mirror_of_mnist(folder: Path, corrupt: str | None = None) -> Path:
    """A folder with the four MNIST files (links to the shared ones), `corrupt` replaced by a bad copy."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in MNIST_FILES:
        if name == corrupt:
            (folder / name).write_bytes(corrupted_gzip(MNIST_DIR / name))
        else:
            (folder / name).symlink_to(MNIST_DIR / name)
    return folder


def corrupted_gzip(path: Path) -> bytes:
    """A valid gzip of the file's content with one byte changed (a label, for a label file)."""
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[-1] = (content[-1] + 1) % 10
    return gzip.compress(bytes(content))


def md5(raw: bytes) -> str:
    return hashlib.md5(raw).hexdigest()


def leftovers(folder: Path) -> list[str]:
    """Temporary files of downloads or extractions left in `folder`."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".")] if folder.exists() else []


# ------------------------------------------------------------------------------------------------------------
# Names, folders, digits


def test_unknown_dataset_lists_known_names() -> None:
    with raises_data_error("'imagenet'", *DATASETS):
        load_dataset("imagenet")


def test_resolve_data_dir_prefers_argument_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_data_dir(None) == Path.home() / ".cache" / "targetprop" / "data"
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "env"))
    assert resolve_data_dir(None) == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"


def test_digits_split_shapes_and_range() -> None:
    dataset = load_dataset("digits")
    assert isinstance(dataset, Dataset)
    assert (len(dataset.train), len(dataset.valid), len(dataset.test)) == (1797 - 540, 180, 360)
    assert dataset.n_classes == 10 and dataset.input_shape == (1, 8, 8) and dataset.n_inputs == 64
    for split in (dataset.train, dataset.valid, dataset.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape == (len(split), 64)
        assert split.x.min() >= 0 and split.x.max() <= 1
    assert dataset.train.x.max() == 1 and set(dataset.train.y.tolist()) == set(range(10))
    # The 1,797 digits images are all different, so 1,797 distinct rows mean the parts are disjoint.
    rows = torch.cat([dataset.train.x, dataset.valid.x, dataset.test.x])
    assert len(torch.unique(rows, dim=0)) == 1797
    again = load_dataset("digits")
    assert torch.equal(again.test.x, dataset.test.x), "the split must be the same on every load"


def test_digits_n_valid_override_and_range_check() -> None:
    dataset = load_dataset("digits", n_valid=100)
    assert (len(dataset.train), len(dataset.valid), len(dataset.test)) == (1797 - 460, 100, 360)
    with raises_data_error("n_valid=5000"):
        load_dataset("digits", n_valid=5000)


def test_dataset_to_moves_every_tensor() -> None:
    dataset = load_dataset("digits", device="meta")
    assert dataset.train.x.device.type == "meta" and dataset.test.y.device.type == "meta"
    moved = load_dataset("digits").to("meta")
    tensors = [t for s in (moved.train, moved.valid, moved.test) for t in (s.x, s.y)]
    assert all(t.device.type == "meta" for t in tensors)


# ------------------------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST


@pytest.fixture(scope="module")
def mnist() -> Dataset:
    assert MNIST_DIR.is_dir(), f"{MNIST_DIR} is missing; the shared data folder must hold mnist/"
    return load_dataset("mnist", DATA)


def test_mnist_split_shapes_and_range(mnist: Dataset) -> None:
    assert (len(mnist.train), len(mnist.valid), len(mnist.test)) == (50_000, 10_000, 10_000)
    assert mnist.input_shape == (1, 28, 28) and mnist.n_inputs == 784 and mnist.n_classes == 10
    for split in (mnist.train, mnist.valid, mnist.test):
        assert split.x.dtype == torch.float32 and split.x.shape == (len(split), 784)
        assert split.y.dtype == torch.int64
        assert split.x.min() == 0 and split.x.max() == 1
    train_valid = torch.cat([mnist.train.y, mnist.valid.y])
    assert torch.bincount(train_valid, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(mnist.test.y, minlength=10).tolist() == MNIST_TEST_COUNTS
    mean = torch.cat([mnist.train.x, mnist.valid.x]).mean().item()
    assert abs(mean - 33.318 / 255) < 1e-3


def test_mnist_validation_is_last_10k_of_official_train(mnist: Dataset) -> None:
    with gzip.open(MNIST_DIR / "train-images-idx3-ubyte.gz") as stream:
        images = parse_idx(stream.read(), MNIST_DIR / "train-images-idx3-ubyte.gz", n_dims=3)
    with gzip.open(MNIST_DIR / "train-labels-idx1-ubyte.gz") as stream:
        labels = parse_idx(stream.read(), MNIST_DIR / "train-labels-idx1-ubyte.gz", n_dims=1)
    official = torch.from_numpy(images.reshape(60_000, 784).astype(np.float32)) / 255
    assert torch.equal(mnist.train.x, official[:50_000])
    assert torch.equal(mnist.valid.x, official[50_000:])
    assert torch.equal(mnist.train.y, torch.from_numpy(labels[:50_000].astype(np.int64)))
    assert torch.equal(mnist.valid.y, torch.from_numpy(labels[50_000:].astype(np.int64)))
    # The test split comes from the other file: its first image is not the first training image.
    assert not torch.equal(mnist.test.x[0], official[0])


def test_fashion_mnist_from_debian_folder(tmp_path: Path) -> None:
    debian = Path(data.DEBIAN_FASHION_MNIST_DIR)
    assert debian.is_dir(), f"{debian} is missing; install it with `apt-get install dataset-fashion-mnist`"
    dataset = load_dataset("fashion-mnist", tmp_path)  # nothing in tmp_path: falls back to Debian's folder
    assert dataset.name == "fashion-mnist" and dataset.input_shape == (1, 28, 28)
    assert (len(dataset.train), len(dataset.valid), len(dataset.test)) == (50_000, 10_000, 10_000)
    assert dataset.train.x.dtype == torch.float32 and dataset.train.x.min() == 0 and dataset.train.x.max() == 1
    train_valid = torch.cat([dataset.train.y, dataset.valid.y])
    assert torch.bincount(train_valid, minlength=10).tolist() == [6000] * 10
    assert torch.bincount(dataset.test.y, minlength=10).tolist() == [1000] * 10


def test_fashion_mnist_missing_everywhere_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian")
    with raises_data_error("apt-get install dataset-fashion-mnist", "--download", "TARGETPROP_DATA"):
        load_dataset("fashion-mnist", tmp_path)


def test_missing_mnist_file_says_how_to_fix(tmp_path: Path) -> None:
    folder = mirror_of_mnist(tmp_path / "mnist")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with raises_data_error("t10k-labels-idx1-ubyte.gz", str(folder), "--download", "--data-dir", "TARGETPROP_DATA"):
        load_dataset("mnist", tmp_path)


def test_mnist_checksum_mismatch_is_caught(tmp_path: Path) -> None:
    mirror_of_mnist(tmp_path / "mnist", corrupt="train-labels-idx1-ubyte.gz")
    expected = MNIST_SPEC.train_labels.md5
    with raises_data_error("train-labels-idx1-ubyte.gz", expected, "checksum mismatch", "delete"):
        load_dataset("mnist", tmp_path)


def test_malformed_idx_file_is_caught(tmp_path: Path) -> None:
    bad_magic = (0x0801).to_bytes(4, "big") + (2).to_bytes(4, "big") + b"\x00\x00"  # labels, not images
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bad_magic))
    files = {"train_images": DataFile("train-images-idx3-ubyte.gz", md5(bad_magic), gunzip=True)}
    spec = dataclasses.replace(MNIST_SPEC, **files)
    for name in MNIST_FILES[1:]:
        (tmp_path / "mnist" / name).symlink_to(MNIST_DIR / name)
    with raises_data_error("train-images-idx3-ubyte.gz", "magic number 0x00000801", "expected 0x00000803"):
        load_dataset("mnist", tmp_path, spec=spec)
    with raises_data_error("holds 1 data bytes", "shape (8,)"):
        parse_idx((0x0801).to_bytes(4, "big") + (8).to_bytes(4, "big") + b"\x01", Path("x"), n_dims=1)


def test_not_a_gzip_file_is_caught(tmp_path: Path) -> None:
    mirror_of_mnist(tmp_path / "mnist")
    (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").unlink()
    (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"<html>not found</html>")
    with raises_data_error("train-images-idx3-ubyte.gz", "not a valid gzip file"):
        load_dataset("mnist", tmp_path)


def test_mnist_download_from_mirror_argument(tmp_path: Path) -> None:
    with serve(MNIST_DIR) as url:
        dataset = load_dataset("mnist", tmp_path, download=True, mirrors=[url + "missing/", url])
    folder = tmp_path / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(MNIST_FILES)
    for name in MNIST_FILES:
        assert (folder / name).read_bytes() == (MNIST_DIR / name).read_bytes()
    assert (len(dataset.train), len(dataset.valid), len(dataset.test)) == (50_000, 10_000, 10_000)


def test_mnist_download_from_mirror_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = mirror_of_mnist(tmp_path / "mnist")
    (folder / "t10k-images-idx3-ubyte.gz").unlink()  # only the missing file is fetched
    with serve(MNIST_DIR) as url:
        monkeypatch.setenv(data.MIRROR_ENV, url)
        dataset = load_dataset("mnist", tmp_path, download=True, n_valid=5_000)
    assert (folder / "t10k-images-idx3-ubyte.gz").is_file() and not leftovers(folder)
    assert (len(dataset.train), len(dataset.valid), len(dataset.test)) == (55_000, 5_000, 10_000)


def test_corrupted_download_leaves_no_file(tmp_path: Path) -> None:
    served = mirror_of_mnist(tmp_path / "served", corrupt="train-labels-idx1-ubyte.gz")
    target = tmp_path / "data"
    with (
        serve(served) as url,
        raises_data_error("train-labels-idx1-ubyte.gz", url, MNIST_SPEC.train_labels.md5),
    ):
        load_dataset("mnist", target, download=True, mirrors=[url])
    folder = target / "mnist"
    assert not (folder / "train-labels-idx1-ubyte.gz").exists()
    assert not leftovers(folder)
    for name in (p.name for p in folder.iterdir()):  # whatever did arrive is complete and verified
        data.verify_file(folder / name, next(f for f in MNIST_SPEC.files if f.filename == name))


def test_download_failure_lists_urls_tried(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with serve(tmp_path / "empty") as url:
        first, second = url + "a/", url + "b/"
        with raises_data_error(first + MNIST_FILES[0], second + MNIST_FILES[0], "404", "TARGETPROP_MIRROR"):
            load_dataset("mnist", tmp_path / "data", download=True, mirrors=[first, second])
    assert not leftovers(tmp_path / "data" / "mnist")


# ------------------------------------------------------------------------------------------------------------
# CIFAR-10 (python-batch format, written by the test)

N_PER_BATCH = 20


@dataclasses.dataclass
class FakeCifar:
    spec: CifarSpec
    archive: bytes
    train_data: np.ndarray
    train_labels: np.ndarray
    test_data: np.ndarray
    test_labels: np.ndarray


@pytest.fixture(scope="module")
def fake_cifar() -> FakeCifar:
    """Five training batches and a test batch of 20 images each, packed like cifar-10-python.tar.gz."""
    rng = np.random.default_rng(1)
    batches: dict[str, bytes] = {}
    arrays = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        images = rng.integers(0, 256, size=(N_PER_BATCH, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=N_PER_BATCH).tolist()
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": images,
            b"filenames": [f"{name}_{i}.png".encode() for i in range(N_PER_BATCH)],
        }
        batches[name] = pickle.dumps(batch, protocol=2)
        arrays[name] = (images, np.array(labels))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, raw in batches.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    archive = buffer.getvalue()
    spec = dataclasses.replace(
        CIFAR10_SPEC,
        archive=DataFile(CIFAR10_SPEC.archive.filename, md5(archive)),
        train_batches=tuple(DataFile(name, md5(batches[name])) for name in names[:5]),
        test_batch=DataFile("test_batch", md5(batches["test_batch"])),
    )
    return FakeCifar(
        spec=spec,
        archive=archive,
        train_data=np.concatenate([arrays[name][0] for name in names[:5]]),
        train_labels=np.concatenate([arrays[name][1] for name in names[:5]]),
        test_data=arrays["test_batch"][0],
        test_labels=arrays["test_batch"][1],
    )


def check_fake_cifar(dataset: Dataset, fake: FakeCifar, n_valid: int) -> None:
    n_train = 5 * N_PER_BATCH - n_valid
    assert dataset.name == "cifar10" and dataset.n_classes == 10
    assert dataset.input_shape == (3, 32, 32) and dataset.n_inputs == 3072
    assert (len(dataset.train), len(dataset.valid), len(dataset.test)) == (n_train, n_valid, N_PER_BATCH)
    all_train_x = torch.cat([dataset.train.x, dataset.valid.x])
    assert all_train_x.dtype == torch.float32 and all_train_x.shape == (5 * N_PER_BATCH, 3072)
    assert torch.equal(all_train_x, torch.from_numpy(fake.train_data.astype(np.float32)) / 255)
    assert torch.equal(dataset.test.x, torch.from_numpy(fake.test_data.astype(np.float32)) / 255)
    assert dataset.train.y.dtype == torch.int64
    assert torch.cat([dataset.train.y, dataset.valid.y]).tolist() == fake.train_labels.tolist()
    assert dataset.test.y.tolist() == fake.test_labels.tolist()


def test_cifar10_spec_is_the_official_release() -> None:
    assert CIFAR10_SPEC.archive == DataFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")
    assert [f.filename for f in CIFAR10_SPEC.batch_files] == [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    assert CIFAR10_SPEC.n_valid == 5_000


def test_cifar10_from_archive_then_from_extracted_folder(tmp_path: Path, fake_cifar: FakeCifar) -> None:
    folder = tmp_path / "cifar10"
    folder.mkdir()
    (folder / "cifar-10-python.tar.gz").write_bytes(fake_cifar.archive)
    dataset = load_dataset("cifar10", tmp_path, n_valid=10, spec=fake_cifar.spec)
    check_fake_cifar(dataset, fake_cifar, n_valid=10)
    assert (folder / "cifar-10-batches-py" / "test_batch").is_file() and not leftovers(folder)
    (folder / "cifar-10-python.tar.gz").unlink()  # the extracted folder is enough from now on
    check_fake_cifar(load_dataset("cifar10", tmp_path, n_valid=30, spec=fake_cifar.spec), fake_cifar, 30)


def test_cifar10_download(tmp_path: Path, fake_cifar: FakeCifar) -> None:
    served = tmp_path / "served"
    served.mkdir()
    (served / "cifar-10-python.tar.gz").write_bytes(fake_cifar.archive)
    with serve(served) as url:
        dataset = load_dataset(
            "cifar10", tmp_path / "data", download=True, mirrors=[url], n_valid=10, spec=fake_cifar.spec
        )
    check_fake_cifar(dataset, fake_cifar, n_valid=10)
    assert (tmp_path / "data" / "cifar10" / "cifar-10-python.tar.gz").read_bytes() == fake_cifar.archive


def test_cifar10_wrong_archive_md5_is_caught(tmp_path: Path, fake_cifar: FakeCifar) -> None:
    folder = tmp_path / "cifar10"
    folder.mkdir()
    (folder / "cifar-10-python.tar.gz").write_bytes(fake_cifar.archive)
    # The real spec's checksum: the small test archive is not the official one.
    with raises_data_error("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", md5(fake_cifar.archive)):
        load_dataset("cifar10", tmp_path)
    assert not (folder / "cifar-10-batches-py").exists() and not leftovers(folder)


def test_cifar10_wrong_archive_served_leaves_no_file(tmp_path: Path, fake_cifar: FakeCifar) -> None:
    served = tmp_path / "served"
    served.mkdir()
    (served / "cifar-10-python.tar.gz").write_bytes(fake_cifar.archive[:-1] + bytes([fake_cifar.archive[-1] ^ 1]))
    with serve(served) as url, raises_data_error("cifar-10-python.tar.gz", url, fake_cifar.spec.archive.md5):
        load_dataset("cifar10", tmp_path / "data", download=True, mirrors=[url], spec=fake_cifar.spec)
    assert list((tmp_path / "data" / "cifar10").iterdir()) == []


def test_cifar10_corrupted_batch_is_caught(tmp_path: Path, fake_cifar: FakeCifar) -> None:
    batch_dir = tmp_path / "cifar10" / "cifar-10-batches-py"
    batch_dir.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(fake_cifar.archive)) as tar:
        for member in tar:
            source = tar.extractfile(member)
            assert source is not None
            (batch_dir / Path(member.name).name).write_bytes(source.read())
    assert load_dataset("cifar10", tmp_path, n_valid=10, spec=fake_cifar.spec).name == "cifar10"
    raw = bytearray((batch_dir / "data_batch_3").read_bytes())
    raw[-100] ^= 1
    (batch_dir / "data_batch_3").write_bytes(bytes(raw))
    with raises_data_error("data_batch_3", fake_cifar.spec.train_batches[2].md5, "delete the folder"):
        load_dataset("cifar10", tmp_path, n_valid=10, spec=fake_cifar.spec)
    (batch_dir / "test_batch").unlink()
    with raises_data_error("incomplete", "test_batch"):
        load_dataset("cifar10", tmp_path, n_valid=10, spec=fake_cifar.spec)


def test_cifar10_missing_and_bad_n_valid(tmp_path: Path, fake_cifar: FakeCifar) -> None:
    with raises_data_error("cifar-10-python.tar.gz", "--download", "--data-dir", "TARGETPROP_DATA"):
        load_dataset("cifar10", tmp_path)
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar-10-python.tar.gz").write_bytes(fake_cifar.archive)
    with raises_data_error("n_valid=5000", "100"):  # the default 5,000 does not fit 100 training images
        load_dataset("cifar10", tmp_path, spec=fake_cifar.spec)


MNIST_SWEEP = """rule = "bp"
data = "mnist"
arch = "784-16-10"
n_train = 500
epochs = 1
seeds = 0
[sweep]
sampler = "random"
trials = 1
[space]
"bp.lr" = {low = 1e-3, high = 1e-2, log = true}
"""


SMALL_MNIST_RUN = ["--data", "mnist", "--arch", "784-16-10", "--set", "n_train=500", "--epochs", "1", "--seeds", "0"]
DATA_COMMANDS = {  # each command that loads data: its arguments, and a file it writes once it has run
    "train": (["train", "--rule", "bp", *SMALL_MNIST_RUN], "summary.json"),
    "compare": (["compare", "--rules", "bp,fa", *SMALL_MNIST_RUN], "fa/summary.json"),
    "reproduce": (
        ["reproduce", "discrete", "--scale", "smoke", "--methods", "bp", "--seeds", "0", "--epochs", "1"],
        "table.md",
    ),
    "sweep": (["sweep", "space.toml"], "trials.csv"),
}


@pytest.mark.parametrize("command_line", list(DATA_COMMANDS))
def test_every_command_that_loads_data_takes_the_download_its_error_names(tmp_path: Path, command_line: str) -> None:
    """Missing data ends in one line that says `--download`; the same command with it fetches and verifies the
    files (from a local mirror) and runs."""
    (tmp_path / "space.toml").write_text(MNIST_SWEEP)
    args, made = DATA_COMMANDS[command_line]
    args = [*args, "-q", "--data-dir", tmp_path / "data", "--out", tmp_path / "runs", "--name", "r"]
    with serve(MNIST_DIR) as url:
        env = {**cli_env(), "TARGETPROP_MIRROR": url}
        run = functools.partial(
            subprocess.run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT
        )
        missing = run(command(*args))
        assert missing.returncode == 2 and "--download" in error_line(missing), show(missing)
        assert not (tmp_path / "runs" / "r").exists(), show(missing)  # refused before making its folder
        fetched = run(command(*args, "--download"))
    assert fetched.returncode == 0, show(fetched)
    for name in MNIST_FILES:
        assert (tmp_path / "data" / "mnist" / name).read_bytes() == (MNIST_DIR / name).read_bytes()
    assert (tmp_path / "runs" / "r" / made).is_file(), show(fetched)


def test_a_resumed_run_takes_download_when_its_data_is_gone(tmp_path: Path) -> None:
    """The data a run was trained on deleted (a new machine, a cleaned cache): `train --resume RUN --download`
    fetches it again and continues, as the error says."""
    args = ["train", "--rule", "bp", *SMALL_MNIST_RUN, "-q", "--data-dir", tmp_path / "data"]
    with serve(MNIST_DIR) as url:
        env = {**cli_env(), "TARGETPROP_MIRROR": url}
        run = functools.partial(
            subprocess.run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT
        )
        mirror_of_mnist(tmp_path / "data" / "mnist")  # a run made without --download, on data that was there
        first = run(command(*args, "--out", tmp_path / "runs", "--name", "r"))
        assert first.returncode == 0, show(first)
        shutil.rmtree(tmp_path / "data")
        resume = ["train", "--resume", tmp_path / "runs" / "r", "--epochs", "2", "-q"]
        missing = run(command(*resume))
        assert missing.returncode == 2 and "--download" in error_line(missing), show(missing)
        resumed = run(command(*resume, "--download"))
    assert resumed.returncode == 0, show(resumed)
    assert [r["epoch"] for r in read_jsonl(tmp_path / "runs" / "r" / "metrics.jsonl")] == [1, 2]
    assert (tmp_path / "data" / "mnist" / MNIST_FILES[0]).is_file()
