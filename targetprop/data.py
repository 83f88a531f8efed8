"""Datasets as whole tensors on one device: scikit-learn's digits, MNIST, Fashion-MNIST, CIFAR-10, and the four
points of XOR (Deep Learning, section 6.1).

Each downloadable dataset is described by a small spec (file names, md5 checksums, mirror URLs), in the
manner of torchvision, so tests and users can point the same loaders at their own files. Every file is
verified against its checksum before use. Downloads go to a temporary file in the target folder that is
renamed into place only after its checksum matches, so a failed download leaves nothing behind.

Errors a user can fix are raised as :class:`targetprop.errors.DataError` with a one-line message.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import importlib.util
import math
import os
import pickle
import posixpath
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from targetprop.errors import DataError

DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion-mnist", "cifar10", "xor")

DATA_DIR_ENV = "TARGETPROP_DATA"
"""Environment variable naming the data folder when no folder is passed explicitly."""

MIRROR_ENV = "TARGETPROP_MIRROR"
"""Environment variable holding one base URL that replaces the mirror list of every dataset."""

DEFAULT_DATA_DIR = Path("~/.cache/targetprop/data")

DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's package `dataset-fashion-mnist` puts the four idx files (looked up at load time)."""

MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
FASHION_MNIST_MIRRORS: tuple[str, ...] = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
CIFAR10_MIRRORS: tuple[str, ...] = ("https://www.cs.toronto.edu/~kriz/",)

_DOWNLOAD_TIMEOUT_S = 60
_CHUNK_BYTES = 1 << 20
_REFETCH = "delete it and download it again (--download)"


# --------------------------------------------------------------------------------------------------------
# Tensors handed to the rest of the library


@dataclass
class Split:
    """One part of a dataset: flattened inputs in [0, 1] and their class labels."""

    x: torch.Tensor  # (N, D) float32
    y: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: str | torch.device) -> Split:
        """Return a copy of this split with both tensors on `device`."""
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class Dataset:
    """A whole dataset, already split into train, validation and test, with every tensor on one device."""

    name: str
    train: Split
    valid: Split
    test: Split
    n_classes: int
    input_shape: tuple[int, ...]  # e.g. (1, 28, 28), (3, 32, 32), (1, 8, 8)

    @property
    def n_inputs(self) -> int:
        """Number of input features of one flattened example."""
        return math.prod(self.input_shape)

    def to(self, device: str | torch.device) -> Dataset:
        """Return a new Dataset with every tensor moved to `device`."""
        return dataclasses.replace(
            self, train=self.train.to(device), valid=self.valid.to(device), test=self.test.to(device)
        )


# --------------------------------------------------------------------------------------------------------
# Specs: which files a dataset is made of, their checksums and where to download them


@dataclass(frozen=True)
class DataFile:
    """One file of a dataset and its md5 checksum.

    With `gunzip=True` the md5 is that of the gunzipped content, which does not depend on the compressor
    (Debian recompressed Fashion-MNIST, so its `.gz` bytes differ from the official ones).
    """

    filename: str
    md5: str
    gunzip: bool = False


@dataclass(frozen=True)
class IdxSpec:
    """A dataset stored as four gzipped idx files (MNIST and Fashion-MNIST).

    The official training set is split into its first part for training and its last `n_valid` examples
    for validation. `fallback_dirs` are searched after `<data_dir>/<folder>`.
    """

    name: str
    title: str
    folder: str
    train_images: DataFile
    train_labels: DataFile
    test_images: DataFile
    test_labels: DataFile
    mirrors: tuple[str, ...]
    n_valid: int = 10_000
    n_classes: int = 10
    fallback_dirs: tuple[Path, ...] = ()
    install_hint: str = ""

    @property
    def files(self) -> tuple[DataFile, ...]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)


@dataclass(frozen=True)
class CifarSpec:
    """A dataset in CIFAR's python-batch format: an archive holding `batch_dir/` with pickled batches.

    The training batches are concatenated in order; the last `n_valid` examples are the validation set.
    """

    name: str
    title: str
    folder: str
    archive: DataFile
    batch_dir: str
    train_batches: tuple[DataFile, ...]
    test_batch: DataFile
    mirrors: tuple[str, ...]
    n_valid: int = 5_000
    n_classes: int = 10
    input_shape: tuple[int, int, int] = (3, 32, 32)

    @property
    def batch_files(self) -> tuple[DataFile, ...]:
        return (*self.train_batches, self.test_batch)


DatasetSpec = IdxSpec | CifarSpec

MNIST_SPEC = IdxSpec(
    name="mnist",
    title="MNIST",
    folder="mnist",
    train_images=DataFile("train-images-idx3-ubyte.gz", "6bbc9ace898e44ae57da46a324031adb", gunzip=True),
    train_labels=DataFile("train-labels-idx1-ubyte.gz", "a25bea736e30d166cdddb491f175f624", gunzip=True),
    test_images=DataFile("t10k-images-idx3-ubyte.gz", "2646ac647ad5339dbf082846283269ea", gunzip=True),
    test_labels=DataFile("t10k-labels-idx1-ubyte.gz", "27ae3e4e09519cfbb04c329615203637", gunzip=True),
    mirrors=MNIST_MIRRORS,
)

FASHION_MNIST_SPEC = IdxSpec(
    name="fashion-mnist",
    title="Fashion-MNIST",
    folder="fashion-mnist",
    train_images=DataFile("train-images-idx3-ubyte.gz", "f4a8712d7a061bf5bd6d2ca38dc4d50a", gunzip=True),
    train_labels=DataFile("train-labels-idx1-ubyte.gz", "9018921c3c673c538a1fc5bad174d6f9", gunzip=True),
    test_images=DataFile("t10k-images-idx3-ubyte.gz", "8181f5470baa50b63fa0f6fddb340f0a", gunzip=True),
    test_labels=DataFile("t10k-labels-idx1-ubyte.gz", "15d484375f8d13e6eb1aabb0c3f46965", gunzip=True),
    mirrors=FASHION_MNIST_MIRRORS,
    install_hint="apt-get install dataset-fashion-mnist",
)

CIFAR10_SPEC = CifarSpec(
    name="cifar10",
    title="CIFAR-10",
    folder="cifar10",
    archive=DataFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    batch_dir="cifar-10-batches-py",
    train_batches=(
        DataFile("data_batch_1", "c99cafc152244af753f735de768cd75f"),
        DataFile("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
        DataFile("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
        DataFile("data_batch_4", "634d18415352ddfa80567beed471001a"),
        DataFile("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
    ),
    test_batch=DataFile("test_batch", "40351d587109b95175f43aff81a1287e"),
    mirrors=CIFAR10_MIRRORS,
)


def default_spec(name: str) -> DatasetSpec:
    """The built-in spec of a downloadable dataset; Fashion-MNIST's falls back to the Debian folder."""
    if name == "mnist":
        return MNIST_SPEC
    if name == "fashion-mnist":
        return dataclasses.replace(FASHION_MNIST_SPEC, fallback_dirs=(Path(DEBIAN_FASHION_MNIST_DIR),))
    if name == "cifar10":
        return CIFAR10_SPEC
    raise DataError(f"no file spec for dataset {name!r}; choose one of: mnist, fashion-mnist, cifar10")


# --------------------------------------------------------------------------------------------------------
# Folders, mirrors, checksums and downloads


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """The data folder: the explicit argument, else $TARGETPROP_DATA, else ~/.cache/targetprop/data."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    from_env = os.environ.get(DATA_DIR_ENV, "").strip()
    if from_env:
        return Path(from_env).expanduser()
    return DEFAULT_DATA_DIR.expanduser()


def resolve_mirrors(default: Sequence[str], mirrors: Sequence[str] | None = None) -> tuple[str, ...]:
    """Base URLs to try in order: the explicit argument, else $TARGETPROP_MIRROR, else `default`."""
    if mirrors is not None:
        return tuple(mirrors)
    from_env = os.environ.get(MIRROR_ENV, "").strip()
    if from_env:
        return (from_env,)
    return tuple(default)


def file_md5(path: Path, *, gunzip: bool = False) -> str:
    """md5 of a file's bytes, or of its gunzipped content with `gunzip=True`."""
    digest = hashlib.md5()
    try:
        with gzip.open(path, "rb") if gunzip else open(path, "rb") as stream:
            while chunk := stream.read(_CHUNK_BYTES):
                digest.update(chunk)
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise DataError(f"{path} is not a valid gzip file ({_one_line(error)}); {_REFETCH}") from error
    except OSError as error:
        raise DataError(f"cannot read {path} ({_one_line(error)}); check that the file is readable") from error
    return digest.hexdigest()


def verify_file(path: Path, file: DataFile) -> None:
    """Raise DataError unless the md5 of `path` matches `file`."""
    actual = file_md5(path, gunzip=file.gunzip)
    if actual != file.md5:
        raise DataError(_mismatch_message(path, file.md5, actual))


def download_file(file: DataFile, folder: Path, mirrors: Sequence[str]) -> Path:
    """Download `file` into `folder` from the first mirror that serves it with the right checksum.

    The file is written to a temporary name in `folder`, verified, then renamed into place. Raises
    DataError listing the URLs tried and the last error when no mirror works.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(
            f"cannot create data folder {folder} ({_one_line(error)}); "
            f"choose a writable folder with --data-dir or {DATA_DIR_ENV}"
        ) from error
    target = folder / file.filename
    tried: list[str] = []
    last_error = "no mirror configured"
    for base in mirrors:
        url = base.rstrip("/") + "/" + file.filename
        tried.append(url)
        try:
            _download_verified(url, file, target)
        except (OSError, ValueError, http.client.HTTPException, DataError) as error:
            last_error = _one_line(error)
            continue
        return target
    raise DataError(
        f"could not download {file.filename}: tried {', '.join(tried) or 'no URL'}; "
        f"last error: {last_error}; check the network, set {MIRROR_ENV} to a base URL that serves it, "
        f"or copy it into {folder}"
    )


def _download_verified(url: str, file: DataFile, target: Path) -> None:
    """Fetch `url` to a temporary file next to `target`, check its md5, and rename it to `target`."""
    fd, temp_name = tempfile.mkstemp(prefix=f".{file.filename}.", suffix=".part", dir=target.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            received = _copy_stream(response, out, total, file.filename)
        if total is not None and received != total:
            raise DataError(f"{url} sent {received} of {total} bytes")
        actual = file_md5(temp, gunzip=file.gunzip)
        if actual != file.md5:
            raise DataError(f"{url} served {file.filename} with md5 {actual}, expected {file.md5}")
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _copy_stream(source: BinaryIO, out: BinaryIO, total: int | None, label: str) -> int:
    """Copy `source` to `out` in chunks, with a rich progress bar when stderr is a terminal."""
    if not (sys.stderr.isatty() and importlib.util.find_spec("rich") is not None):
        return _copy_chunks(source, out, lambda n: None)
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(label, total=total)
        return _copy_chunks(source, out, lambda n: progress.advance(task, n))


def _copy_chunks(source: BinaryIO, out: BinaryIO, advance: Callable[[int], None]) -> int:
    received = 0
    while chunk := source.read(_CHUNK_BYTES):
        out.write(chunk)
        received += len(chunk)
        advance(len(chunk))
    return received


def _mismatch_message(path: Path, expected: str, actual: str, fix: str | None = None) -> str:
    fix = fix or _REFETCH
    return f"checksum mismatch for {path}: expected md5 {expected}, got {actual}; {fix}"


def _one_line(error: BaseException) -> str:
    """An exception's message squeezed onto one line."""
    return " ".join(str(error).split()) or type(error).__name__


def _missing_message(title: str, names: Sequence[str], where: str, folder: str, hint: str = "") -> str:
    noun = "file" if len(names) == 1 else "files"
    message = (
        f"{title} {noun} {', '.join(names)} not found in {where}; download with --download (download=True) "
        f"or point --data-dir / {DATA_DIR_ENV} at a folder holding {folder}/"
    )
    return message + (f", or run `{hint}`" if hint else "")


# --------------------------------------------------------------------------------------------------------
# Splitting and conversion to tensors


def _check_n_valid(n_valid: int, n_total: int, name: str) -> None:
    if not isinstance(n_valid, int) or isinstance(n_valid, bool) or not 1 <= n_valid < n_total:
        raise DataError(
            f"n_valid={n_valid!r} is out of range for {name}: choose a whole number with "
            f"1 <= n_valid < {n_total} (the size of its official training set)"
        )


def _inputs(pixels: np.ndarray, scale: float, device: str | torch.device) -> torch.Tensor:
    """uint8 array (N, ...) -> float32 tensor (N, D) in [0, 1] on `device` (converted on the device)."""
    flat = np.ascontiguousarray(pixels.reshape(pixels.shape[0], -1))
    return torch.from_numpy(flat.copy()).to(device).to(torch.float32).div_(scale)


def _labels(labels: np.ndarray, device: str | torch.device) -> torch.Tensor:
    return torch.from_numpy(labels.astype(np.int64)).to(device)


def _train_valid(x: torch.Tensor, y: torch.Tensor, n_valid: int) -> tuple[Split, Split]:
    """The official training set split into its first part (train) and its last `n_valid` (validation)."""
    n_train = x.shape[0] - n_valid
    return Split(x[:n_train], y[:n_train]), Split(x[n_train:], y[n_train:])


def _check_labels(labels: np.ndarray, n_classes: int, path: Path, fix: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(f"{path} holds labels outside 0..{n_classes - 1} (found {labels.min()}..{labels.max()}); {fix}")


# --------------------------------------------------------------------------------------------------------
# scikit-learn's digits


def load_digits(*, device: str | torch.device = "cpu", n_valid: int | None = None) -> Dataset:
    """scikit-learn's bundled 8x8 digits: a fixed permutation gives 360 test, 180 validation, rest train."""
    from sklearn.datasets import load_digits as sklearn_digits

    n_test = 360
    n_valid = 180 if n_valid is None else n_valid
    digits = sklearn_digits()
    images, labels = np.asarray(digits.data), np.asarray(digits.target)
    _check_n_valid(n_valid, len(labels) - n_test, "digits")
    order = np.random.default_rng(0).permutation(len(labels))
    parts = (order[:n_test], order[n_test : n_test + n_valid], order[n_test + n_valid :])
    test, valid, train = (
        Split(_inputs(images[idx].astype(np.float32), 16.0, device), _labels(labels[idx], device)) for idx in parts
    )
    return Dataset("digits", train=train, valid=valid, test=test, n_classes=10, input_shape=(1, 8, 8))


# --------------------------------------------------------------------------------------------------------
# XOR (Goodfellow, Bengio & Courville, Deep Learning, section 6.1)


def load_xor(*, device: str | torch.device = "cpu", n_valid: int | None = None) -> Dataset:
    """The four points ``x ∈ {0, 1}²`` in the order (0, 0), (0, 1), (1, 0), (1, 1), labelled ``x_1 XOR x_2``
    (0, 1, 1, 0). The task is to fit these four points, not to generalise: the training, validation and test sets
    are all four of them."""
    if n_valid is not None:
        raise DataError(
            "xor has no validation split to size (train, validation and test are its four points); drop n_valid"
        )
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], device=device)
    y = torch.tensor([0, 1, 1, 0], device=device)
    train, valid, test = (Split(x.clone(), y.clone()) for _ in range(3))
    return Dataset("xor", train=train, valid=valid, test=test, n_classes=2, input_shape=(2,))


# --------------------------------------------------------------------------------------------------------
# idx datasets: MNIST and Fashion-MNIST


def load_idx(
    spec: IdxSpec,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device = "cpu",
    download: bool = False,
    n_valid: int | None = None,
    mirrors: Sequence[str] | None = None,
) -> Dataset:
    """Load a dataset stored as four gzipped idx files described by `spec`, verifying each one."""
    folder = _find_idx_folder(spec, resolve_data_dir(data_dir), download=download, mirrors=mirrors)
    train_images = _read_idx(folder / spec.train_images.filename, spec.train_images, n_dims=3)
    train_labels = _read_idx(folder / spec.train_labels.filename, spec.train_labels, n_dims=1)
    test_images = _read_idx(folder / spec.test_images.filename, spec.test_images, n_dims=3)
    test_labels = _read_idx(folder / spec.test_labels.filename, spec.test_labels, n_dims=1)
    fix = _REFETCH
    pairs = ((train_images, train_labels, spec.train_labels), (test_images, test_labels, spec.test_labels))
    for images, labels, file in pairs:
        if len(images) != len(labels):
            raise DataError(f"{folder / file.filename} has {len(labels)} labels for {len(images)} images; {fix}")
        _check_labels(labels, spec.n_classes, folder / file.filename, fix)
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DataError(
            f"{spec.title} train images are {train_images.shape[1:]} but test images are "
            f"{test_images.shape[1:]} in {folder}; {fix}"
        )
    n_valid = spec.n_valid if n_valid is None else n_valid
    _check_n_valid(n_valid, len(train_labels), spec.name)
    train, valid = _train_valid(_inputs(train_images, 255.0, device), _labels(train_labels, device), n_valid)
    test = Split(_inputs(test_images, 255.0, device), _labels(test_labels, device))
    return Dataset(
        spec.name,
        train=train,
        valid=valid,
        test=test,
        n_classes=spec.n_classes,
        input_shape=(1, *train_images.shape[1:]),
    )


def _find_idx_folder(spec: IdxSpec, data_dir: Path, *, download: bool, mirrors: Sequence[str] | None) -> Path:
    """The first folder holding all files of `spec`; downloads the missing ones if asked to."""
    primary = data_dir / spec.folder
    for folder in (primary, *spec.fallback_dirs):
        if all((folder / file.filename).is_file() for file in spec.files):
            return folder
    missing = [file for file in spec.files if not (primary / file.filename).is_file()]
    if download:
        urls = resolve_mirrors(spec.mirrors, mirrors)
        for file in missing:
            download_file(file, primary, urls)
        return primary
    where = " or ".join(str(folder) for folder in (primary, *spec.fallback_dirs))
    names = [file.filename for file in missing]
    raise DataError(_missing_message(spec.title, names, where, spec.folder, spec.install_hint))


def _read_idx(path: Path, file: DataFile, *, n_dims: int) -> np.ndarray:
    """Read and verify one gzipped idx file of unsigned bytes with `n_dims` dimensions."""
    try:
        with gzip.open(path, "rb") as stream:
            raw = stream.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise DataError(f"{path} is not a valid gzip file ({_one_line(error)}); {_REFETCH}") from error
    except OSError as error:
        raise DataError(f"cannot read {path} ({_one_line(error)}); check that the file is readable") from error
    actual = hashlib.md5(raw).hexdigest() if file.gunzip else file_md5(path)
    if actual != file.md5:
        raise DataError(_mismatch_message(path, file.md5, actual))
    return parse_idx(raw, path, n_dims=n_dims)


def parse_idx(raw: bytes, path: Path, *, n_dims: int) -> np.ndarray:
    """Parse the bytes of an idx file of unsigned bytes (magic 0x0800 + `n_dims`) into a uint8 array."""
    fix = _REFETCH
    expected_magic = 0x0800 + n_dims
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if magic != expected_magic:
        found = "a file shorter than 4 bytes" if magic is None else f"magic number 0x{magic:08x}"
        raise DataError(
            f"{path} is not an idx file of {n_dims}-d bytes ({found}, expected 0x{expected_magic:08x}); {fix}"
        )
    header = 4 + 4 * n_dims
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its idx header ({len(raw)} bytes); {fix}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=n_dims, offset=4))
    if len(raw) != header + math.prod(dims):
        raise DataError(
            f"{path} holds {len(raw) - header} data bytes, but its idx header gives shape {dims}, "
            f"which needs {math.prod(dims)}; {fix}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


# --------------------------------------------------------------------------------------------------------
# CIFAR python-batch format


def load_cifar(
    spec: CifarSpec,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device = "cpu",
    download: bool = False,
    n_valid: int | None = None,
    mirrors: Sequence[str] | None = None,
) -> Dataset:
    """Load a dataset in CIFAR's python-batch format described by `spec`.

    Uses `<data_dir>/<folder>/<batch_dir>/` when present; otherwise extracts the verified archive found in
    (or, with `download=True`, downloaded to) `<data_dir>/<folder>/`. Every batch file is verified.
    """
    folder = resolve_data_dir(data_dir) / spec.folder
    batch_dir = folder / spec.batch_dir
    archive = folder / spec.archive.filename
    if not batch_dir.is_dir():
        if archive.is_file():
            verify_file(archive, spec.archive)
        elif download:
            download_file(spec.archive, folder, resolve_mirrors(spec.mirrors, mirrors))
        else:
            raise DataError(
                f"{spec.title} archive {spec.archive.filename} (or its extracted {spec.batch_dir}/) "
                f"not found in {folder}; download with --download (download=True) "
                f"or point --data-dir / {DATA_DIR_ENV} at a folder holding {spec.folder}/"
            )
        _extract_batches(archive, spec)
    missing = [file.filename for file in spec.batch_files if not (batch_dir / file.filename).is_file()]
    if missing:
        raise DataError(
            f"{batch_dir} is incomplete (missing {', '.join(missing)}); delete that folder so that it is "
            f"extracted again from {spec.archive.filename}"
        )
    train_parts = [_read_cifar_batch(batch_dir / file.filename, file, spec) for file in spec.train_batches]
    test_data, test_labels = _read_cifar_batch(batch_dir / spec.test_batch.filename, spec.test_batch, spec)
    train_data = np.concatenate([data for data, _ in train_parts])
    train_labels = np.concatenate([labels for _, labels in train_parts])
    n_valid = spec.n_valid if n_valid is None else n_valid
    _check_n_valid(n_valid, len(train_labels), spec.name)
    train, valid = _train_valid(_inputs(train_data, 255.0, device), _labels(train_labels, device), n_valid)
    test = Split(_inputs(test_data, 255.0, device), _labels(test_labels, device))
    return Dataset(
        spec.name, train=train, valid=valid, test=test, n_classes=spec.n_classes, input_shape=spec.input_shape
    )


def _extract_batches(archive: Path, spec: CifarSpec) -> None:
    """Extract the batch files of `spec` from `archive` into a temporary folder, then rename it into place."""
    folder = archive.parent
    wanted = {posixpath.join(spec.batch_dir, file.filename) for file in spec.batch_files}
    fix = _REFETCH
    temp = Path(tempfile.mkdtemp(prefix=".extract-", dir=folder))
    try:
        (temp / spec.batch_dir).mkdir(parents=True)
        found: set[str] = set()
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = posixpath.normpath(member.name)
                if name not in wanted or not member.isfile():
                    continue
                source = tar.extractfile(member)
                if source is None:
                    continue
                with source, open(temp / name, "wb") as out:
                    shutil.copyfileobj(source, out)
                found.add(name)
        if found != wanted:
            raise DataError(f"archive {archive} lacks {', '.join(sorted(wanted - found))}; {fix}")
        os.replace(temp / spec.batch_dir, folder / spec.batch_dir)
    except (tarfile.TarError, EOFError, zlib.error) as error:
        raise DataError(f"cannot extract {archive} ({_one_line(error)}); {fix}") from error
    except OSError as error:
        raise DataError(
            f"cannot extract {archive} into {folder} ({_one_line(error)}); check free space and permissions"
        ) from error
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _read_cifar_batch(path: Path, file: DataFile, spec: CifarSpec) -> tuple[np.ndarray, np.ndarray]:
    """Verify and unpickle one batch: returns uint8 data (N, C*H*W) and labels (N,)."""
    fix = (
        f"delete the folder {path.parent} (and {spec.archive.filename} if this persists) and run again with --download"
    )
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"cannot read {path} ({_one_line(error)}); check that the file is readable") from error
    actual = hashlib.md5(raw).hexdigest()
    if actual != file.md5:
        raise DataError(_mismatch_message(path, file.md5, actual, fix))
    try:  # safe to unpickle: the checksum matched the spec
        batch = pickle.loads(raw, encoding="bytes")
    except Exception as error:
        raise DataError(f"{path} is not a readable CIFAR batch ({_one_line(error)}); {fix}") from error
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{path} is not a CIFAR batch (a dict with b'data' and b'labels'); {fix}")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"])
    n_features = math.prod(spec.input_shape)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != n_features:
        raise DataError(f"{path} holds data of {data.dtype} {data.shape}, expected uint8 (N, {n_features}); {fix}")
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path} holds {labels.shape} labels for {len(data)} images; {fix}")
    _check_labels(labels, spec.n_classes, path, fix)
    return data, labels.astype(np.int64)


# --------------------------------------------------------------------------------------------------------
# Entry point


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device = "cpu",
    download: bool = False,
    n_valid: int | None = None,
    mirrors: Sequence[str] | None = None,
    spec: DatasetSpec | None = None,
) -> Dataset:
    """Load dataset `name` (one of DATASETS) as whole tensors on `device`.

    data_dir: folder holding `mnist/`, `fashion-mnist/`, `cifar10/` (see resolve_data_dir).
    download: fetch missing files from the mirrors (`mirrors`, else $TARGETPROP_MIRROR, else the spec's).
    n_valid: size of the validation set taken from the end of the official training set.
    spec: replaces the built-in file spec of `name` (own files and checksums, e.g. in tests).
    """
    key = name.strip().lower()
    if key not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if key == "digits":
        return load_digits(device=device, n_valid=n_valid)
    if key == "xor":
        return load_xor(device=device, n_valid=n_valid)
    spec = default_spec(key) if spec is None else spec
    if isinstance(spec, IdxSpec):
        return load_idx(spec, data_dir, device=device, download=download, n_valid=n_valid, mirrors=mirrors)
    return load_cifar(spec, data_dir, device=device, download=download, n_valid=n_valid, mirrors=mirrors)
