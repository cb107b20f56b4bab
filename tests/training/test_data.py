"""Data folders that training cannot use are refused by the loader, naming the folder and the defect."""

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from pcsim.training.data import DataError, Dataset, load_dataset


def _write_idx(path: Path, array) -> None:
    array = np.asarray(array, dtype=np.uint8)
    path.write_bytes(bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


def _mnist_folder(folder: Path, n_train=6, n_test=3, train_image=(4, 4), test_image=(4, 4), label_shape=()) -> str:
    rng = np.random.default_rng(0)
    for prefix, n, image in (("train", n_train, train_image), ("t10k", n_test, test_image)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, *image)))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 3, (n, *label_shape)))
    return str(folder)


def test_a_well_formed_folder_still_loads(tmp_path):
    data = load_dataset(_mnist_folder(tmp_path))
    assert data.input_shape == (1, 4, 4) and (len(data.x_train), len(data.x_test)) == (6, 3)


@pytest.mark.parametrize("layout, message", [
    (dict(n_train=0), "train split holds no samples"),
    (dict(n_test=0), "test split holds no samples"),
    (dict(n_train=0, n_test=0), "train split holds no samples"),
    (dict(test_image=(5, 5)), r"train samples have shape \(1, 4, 4\) but test samples \(1, 5, 5\)"),
    (dict(label_shape=(2,)), r"train labels have shape \(6, 2\)"),
])
def test_unusable_mnist_folders_are_data_errors_naming_the_folder(tmp_path, layout, message):
    # before: max() of an empty sequence, a ZeroDivisionError after an epoch, or a shape error inside the model
    folder = _mnist_folder(tmp_path, **layout)
    with pytest.raises(DataError, match=message) as caught:
        load_dataset(folder)
    assert folder in str(caught.value)


def test_cifar_labels_outside_its_ten_classes_are_refused(tmp_path):
    # before: accepted, and one_hot(y, 10) failed in the first batch
    def batch(n, label):
        return {b"data": np.zeros((n, 3 * 32 * 32), dtype=np.uint8), b"labels": [label] * n}

    for i in range(1, 6):
        (tmp_path / f"data_batch_{i}").write_bytes(pickle.dumps(batch(2, 1)))
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch(2, 10)))
    with pytest.raises(DataError, match=r"labels run from 1 to 10; expected class indices 0\.\.9"):
        load_dataset(str(tmp_path))


def test_a_data_set_you_build_is_checked_as_the_loaders_sets_are():
    """The checks live in Dataset itself, so a set built by hand cannot slip past them."""
    x, y = torch.rand(4, 3), torch.tensor([0, 1, 0, 1])
    with pytest.raises(DataError, match="data set mine: the train split holds no samples"):
        Dataset("mine", x[:0], y[:0], x, y, 2)
    with pytest.raises(DataError, match=r"test labels have shape \(4, 1\)"):
        Dataset("mine", x, y, x, y[:, None], 2)
    with pytest.raises(DataError, match=r"train samples have shape \(3,\) but test samples \(2,\)"):
        Dataset("mine", x, y, x[:, :2], y, 2)
    with pytest.raises(DataError, match="labels run from 0 to 1; expected class indices 0..0"):
        Dataset("mine", x, y, x, y, 1)
    with pytest.raises(DataError, match="labels are torch.float32"):
        Dataset("mine", x, y.float(), x, y, 2)
    assert Dataset("mine", x, y, x, y, 2).to(torch.float64).x_test.dtype == torch.float64


def test_soft_labels_are_refused_saying_training_takes_none_but_the_rules_do():
    """Class probabilities were refused as 'expected one class index per sample', no word that the rules take them
    (loss='ce', a target of the logits' shape) while training reads class indices throughout."""
    x = torch.rand(4, 3)
    soft = torch.softmax(torch.randn(4, 2, generator=torch.Generator().manual_seed(0)), dim=1)
    y = torch.tensor([0, 1, 0, 1])
    with pytest.raises(DataError, match=r"train labels have shape \(4, 2\); expected one class index per sample, "
                                        r"shape \(4,\); training takes no class probabilities \(soft labels\): "
                                        r"pcsim.bp, .*simulate do"):
        Dataset("mine", x, soft, x, y, 2)
    with pytest.raises(DataError, match=r"labels are torch.float\d+; expected integer class indices; training takes "
                                        r"no class probabilities"):
        Dataset("mine", x, soft[:, 0], x, y, 2)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_sample_that_is_not_finite_is_refused_by_split_and_index(bad):
    # before: BP trained to NaN parameters, exit as usual; Z-IL stopped at the batch with "input 'input' holds NaN"
    x, y = torch.rand(6, 3), torch.tensor([0, 1, 0, 1, 0, 1])
    poisoned = x.clone()
    poisoned[4, 1] = bad
    with pytest.raises(DataError, match=rf"data set mine: test sample 4 holds {bad} \(at \(4, 1\)\); inputs must be"):
        Dataset("mine", x, y, poisoned, y, 2)
    assert Dataset("mine", torch.arange(6)[:, None], y, torch.arange(6)[:, None], y, 2).n_classes == 2  # token ids


@pytest.mark.parametrize("width, labels", [(100, 2), (3072, 3)])
def test_a_cifar_batch_of_another_shape_is_refused_naming_the_file(tmp_path, width, labels):
    # before: NumPy's 'all the input array dimensions except for the concatenation axis must match exactly', or a
    # label count off by one caught later, with no file named
    for i in range(1, 6):
        data = np.zeros((2, width if i == 3 else 3072), dtype=np.uint8)
        (tmp_path / f"data_batch_{i}").write_bytes(pickle.dumps({b"data": data, b"labels": [0] * (labels if i == 3
                                                                                                  else 2)}))
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match=rf"data_batch_3: b'data' has shape \(2, {width}\) and b'labels' "
                                        rf"\({labels},\); a CIFAR-10 batch holds \(N, 3072\) bytes"):
        load_dataset(str(tmp_path))


@pytest.mark.parametrize("label_dtype", [torch.int32, torch.uint8])
@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_integer_labels_of_any_width_train_as_a_torch_loop_on_int64_labels_does(label_dtype, loss):
    # before: int32 labels (NumPy's on some platforms) or uint8 ones (an IDX file's) stopped the first step inside
    # torch: 'one_hot is only applicable to index tensor of type LongTensor' (mse)
    from pcsim.numerics import tolerance
    from pcsim.training import TrainConfig, build_run, train

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(10, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (10,), generator=g)
    torch.manual_seed(0)
    start = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()
    data = Dataset("toy", x, y.to(label_dtype), x, y.to(label_dtype), 3)
    run = build_run(TrainConfig(model="m", rule="zil", epochs=1, batch_size=5, lr=0.1, dtype="float64", seed=2),
                    data, module=pickle.loads(pickle.dumps(start)), loss=loss)
    row = train(run, progress=False)[0]
    module, summed = pickle.loads(pickle.dumps(start)), 0.0  # the torch loop, on int64 labels
    opt = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
    for idx in torch.randperm(10, generator=torch.Generator().manual_seed(2)).split(5):
        out = module(x[idx])
        total = (torch.nn.functional.cross_entropy(out, y[idx], reduction="sum") if loss == "ce" else
                 0.5 * ((out - torch.nn.functional.one_hot(y[idx], 3).double()) ** 2).sum())
        summed += total.item()
        opt.zero_grad()
        (total / len(idx)).backward()
        opt.step()
    assert abs(row["train_loss"] - summed / 10) <= tolerance(torch.float64) * summed / 10
    for got, want in zip(run.module.parameters(), module.parameters(), strict=True):
        assert ((got - want).norm() / want.norm()).item() <= tolerance(torch.float64)
