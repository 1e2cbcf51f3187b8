"""Tests for rws_jax.data: IDX parsing, Fashion-MNIST, digits, TFDS (mocked), splits, batches."""

import gzip
import hashlib
import struct

import numpy as np
import pytest

from rws_jax.data import (
    DATASET_NAMES,
    FASHION_MNIST_ENV,
    ArraySplit,
    DatasetNotFoundError,
    IDXFormatError,
    cifar10_corrupted_name,
    iterate_batches,
    load_cifar10_corrupted,
    load_dataset,
    load_fashion_mnist_idx,
    load_tfds_split,
    num_batches,
    pad_images,
    read_idx,
    split_disjoint,
    split_train_val,
    tfds_corruption_name,
)

APT_HINT = "apt-get install -y dataset-fashion-mnist"


# ---------------------------------------------------------------- helpers

def _idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.tobytes()


def _write_fake_fmnist(directory, n_train=40, n_test=12, seed=0):
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (directory / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(images)))
        (directory / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(labels)))
    return directory


def _row_hashes(images):
    return sorted(hashlib.blake2b(x.tobytes(), digest_size=8).hexdigest() for x in images)


def _id_split(n=100, classes=5):
    """Split whose first pixel encodes the example id (so overlaps are detectable)."""
    images = np.zeros((n, 2, 2, 1), np.uint8)
    ids = np.arange(n)
    images[:, 0, 0, 0] = ids % 256
    images[:, 0, 1, 0] = ids // 256
    return ArraySplit(images, (ids % classes).astype(np.int32))


def _ids(split):
    return split.images[:, 0, 0, 0].astype(int) + 256 * split.images[:, 0, 1, 0].astype(int)


# ---------------------------------------------------------------- IDX format

def test_read_idx_roundtrip_gzip_and_plain(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.gz").write_bytes(gzip.compress(_idx_bytes(arr)))
    (tmp_path / "a").write_bytes(_idx_bytes(arr))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz", expected_ndim=3), arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), arr)


def test_read_idx_truncated_payload(tmp_path):
    data = _idx_bytes(np.zeros((5, 28, 28), np.uint8))[:-100]
    (tmp_path / "t.gz").write_bytes(gzip.compress(data))
    with pytest.raises(IDXFormatError, match=r"truncated IDX file.*\(5, 28, 28\)"):
        read_idx(tmp_path / "t.gz")


def test_read_idx_truncated_gzip_stream(tmp_path):
    blob = gzip.compress(_idx_bytes(np.random.default_rng(0).integers(0, 255, (50, 28, 28))))
    (tmp_path / "t.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(IDXFormatError, match="truncated or corrupt gzip"):
        read_idx(tmp_path / "t.gz")


@pytest.mark.parametrize("header", [b"\x08\x03\x00\x00", b"\x00\x01\x08\x03", b"\x00\x00\x42\x03"])
def test_read_idx_bad_magic(tmp_path, header):
    data = header + struct.pack(">3I", 1, 2, 2) + bytes(4)
    (tmp_path / "m.gz").write_bytes(gzip.compress(data))
    with pytest.raises(IDXFormatError, match="bad IDX magic number"):
        read_idx(tmp_path / "m.gz")


def test_read_idx_wrong_ndim_and_trailing_bytes(tmp_path):
    (tmp_path / "l").write_bytes(_idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(IDXFormatError, match="expected an IDX file with 3"):
        read_idx(tmp_path / "l", expected_ndim=3)
    (tmp_path / "x").write_bytes(_idx_bytes(np.zeros(4, np.uint8)) + b"junk")
    with pytest.raises(IDXFormatError, match="trailing bytes"):
        read_idx(tmp_path / "x")
    assert issubclass(IDXFormatError, ValueError)


# ---------------------------------------------------------------- Fashion-MNIST

def test_missing_dir_gives_install_hint(tmp_path, monkeypatch):
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(DatasetNotFoundError) as info:
        load_fashion_mnist_idx("train")
    assert isinstance(info.value, FileNotFoundError)
    msg = str(info.value)
    assert APT_HINT in msg and FASHION_MNIST_ENV in msg and str(tmp_path / "nowhere") in msg
    with pytest.raises(DatasetNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        load_dataset("fashion_mnist", data_dir=tmp_path)


def test_fake_fmnist_dir_via_env_and_arg(tmp_path, monkeypatch):
    d = _write_fake_fmnist(tmp_path / "fm")
    monkeypatch.setenv(FASHION_MNIST_ENV, str(d))
    ds = load_dataset("fashion_mnist", val_size=10)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (30, 10, 12)
    assert ds.image_shape == (32, 32, 1)
    # Zero padding: 2 pixels each side.
    assert not ds.test.images[:, :2].any() and not ds.test.images[:, -2:].any()
    monkeypatch.delenv(FASHION_MNIST_ENV)
    ds2 = load_dataset("fashion_mnist", val_size=10, data_dir=d, pad_to=None)
    assert ds2.image_shape == (28, 28, 1)
    np.testing.assert_array_equal(ds2.test.images, ds.test.images[:, 2:-2, 2:-2])


def test_fake_fmnist_corrupt_labels_file(tmp_path):
    d = _write_fake_fmnist(tmp_path / "fm")
    (d / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(_idx_bytes(np.zeros(39, np.uint8))))  # 39 labels for 40 images
    with pytest.raises(IDXFormatError, match="40 images but .* 39 labels"):
        load_fashion_mnist_idx("train", d)


@pytest.fixture(scope="module")
def fmnist():
    try:
        return load_dataset("fashion_mnist", seed=0)
    except DatasetNotFoundError as e:
        pytest.skip(f"Debian Fashion-MNIST files absent ({APT_HINT} as root to run this): "
                    f"{str(e).splitlines()[0]}")


def test_fashion_mnist_shapes_and_splits(fmnist):
    assert fmnist.name == "fashion_mnist" and fmnist.num_classes == 10
    assert (len(fmnist.train), len(fmnist.val), len(fmnist.test)) == (55_000, 5_000, 10_000)
    for split in (fmnist.train, fmnist.val, fmnist.test):
        assert split.images.dtype == np.uint8 and split.images.shape[1:] == (32, 32, 1)
        assert split.labels.dtype == np.int32
        assert split.labels.min() == 0 and split.labels.max() == 9
    np.testing.assert_array_equal(np.bincount(fmnist.test.labels), [1000] * 10)
    assert fmnist.test.images.max() == 255


def test_fashion_mnist_train_val_partition(fmnist):
    full_images, full_labels = load_fashion_mnist_idx("train")
    assert full_images.shape == (60_000, 28, 28, 1)
    # train + val is exactly the official training set (as a multiset of images) ...
    both = np.concatenate([fmnist.train.images, fmnist.val.images])[:, 2:-2, 2:-2]
    assert _row_hashes(both) == _row_hashes(full_images)
    np.testing.assert_array_equal(np.bincount(np.concatenate([fmnist.train.labels, fmnist.val.labels])),
                                  np.bincount(full_labels))
    # ... and no image is in both unless it is duplicated in the official training set.
    train_h = set(_row_hashes(fmnist.train.images))
    val_h = _row_hashes(fmnist.val.images)
    full_h = _row_hashes(full_images)
    dupes = {h for h, c in zip(*np.unique(full_h, return_counts=True)) if c > 1}
    assert {h for h in val_h if h in train_h} <= dupes


def test_fashion_mnist_determinism(fmnist):
    again = load_dataset("fashion_mnist", seed=0)
    np.testing.assert_array_equal(again.val.images, fmnist.val.images)
    np.testing.assert_array_equal(again.train.labels, fmnist.train.labels)
    other = load_dataset("fashion_mnist", seed=1, max_train=1000)
    assert len(other.train) == 1000 and len(other.val) == 5000
    assert not np.array_equal(other.val.labels, fmnist.val.labels)


# ---------------------------------------------------------------- digits

def test_digits():
    ds = load_dataset("digits", seed=0)
    assert ds.name == "digits" and ds.num_classes == 10
    assert len(ds.train) + len(ds.val) + len(ds.test) == 1797
    assert (len(ds.val), len(ds.test)) == (180, 360)
    for s in (ds.train, ds.val, ds.test):
        assert s.images.shape[1:] == (32, 32, 1) and s.images.dtype == np.uint8
        assert set(np.unique(s.labels)) == set(range(10))  # stratified
    assert ds.train.images.max() == 255
    # Nearest-neighbour x4 upscaling: 4x4 blocks are constant.
    blocks = ds.test.images[..., 0].reshape(-1, 8, 4, 8, 4)
    assert (blocks == blocks[:, :, :1, :, :1]).all()
    again = load_dataset("digits", seed=0)
    np.testing.assert_array_equal(again.test.images, ds.test.images)
    other = load_dataset("digits", seed=3)
    assert not np.array_equal(other.test.labels, ds.test.labels)
    all_h = _row_hashes(np.concatenate([ds.train.images, ds.val.images, ds.test.images]))
    assert len(all_h) == 1797


def test_unknown_dataset():
    with pytest.raises(ValueError, match="valid names: fashion_mnist, digits, cifar10, cifar100"):
        load_dataset("mnist")
    assert set(DATASET_NAMES) == {"fashion_mnist", "digits", "cifar10", "cifar100"}
    with pytest.raises(ValueError, match="source"):
        load_dataset("cifar10", source="idx")


# ---------------------------------------------------------------- TFDS (mocked, no network, no TF)

@pytest.fixture
def mock_tfds():
    tfds = pytest.importorskip("tensorflow_datasets")

    def mock(n):
        return tfds.testing.mock_data(num_examples=n, policy=tfds.testing.MockPolicy.USE_CODE)
    return mock


def test_tfds_cifar10(mock_tfds):
    with mock_tfds(20):
        ds = load_dataset("cifar10", val_size=5, seed=0)
    assert ds.name == "cifar10" and ds.num_classes == 10
    assert (len(ds.train), len(ds.val), len(ds.test)) == (15, 5, 20)
    assert ds.train.images.shape[1:] == (32, 32, 3) and ds.train.images.dtype == np.uint8
    assert ds.train.labels.dtype == np.int32 and 0 <= ds.train.labels.min() <= ds.train.labels.max() < 10


def test_tfds_cifar100_and_fashion_mnist(mock_tfds):
    with mock_tfds(12):
        c100 = load_dataset("cifar100", val_size=2, max_test=4)
        fm = load_dataset("fashion_mnist", source="tfds", val_size=2)
    assert c100.num_classes == 100 and len(c100.test) == 4
    assert fm.image_shape == (32, 32, 1) and len(fm.train) == 10


def test_tfds_cifar10_corrupted(mock_tfds):
    assert tfds_corruption_name("glass_blur") == "frosted_glass_blur"
    assert tfds_corruption_name("elastic_transform") == "elastic"
    assert tfds_corruption_name("gaussian_noise") == "gaussian_noise"
    assert cifar10_corrupted_name("glass_blur", 5) == "cifar10_corrupted/frosted_glass_blur_5"
    with pytest.raises(ValueError, match="unknown corruption"):
        tfds_corruption_name("rain")
    with pytest.raises(ValueError, match="severity"):
        cifar10_corrupted_name("fog", 6)
    with mock_tfds(9):
        direct = load_tfds_split("cifar10_corrupted/frosted_glass_blur_5", "test")
        via = load_cifar10_corrupted("glass_blur", 5)
        with pytest.raises(ValueError, match="only a 'test' split"):
            load_tfds_split("cifar10_corrupted/frosted_glass_blur_5", "train")
    assert len(direct) == 9 and direct.images.shape == (9, 32, 32, 3)
    assert direct.images.dtype == np.uint8
    np.testing.assert_array_equal(direct.images, via.images)


def test_tfds_missing_data_dir(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(DatasetNotFoundError, match="download_and_prepare"):
        load_tfds_split("cifar10", "test", data_dir=tmp_path)


# ---------------------------------------------------------------- splits and batches

def test_array_split_validation():
    with pytest.raises(ValueError, match="uint8"):
        ArraySplit(np.zeros((2, 4, 4, 1), np.float32), np.zeros(2))
    with pytest.raises(ValueError, match="labels"):
        ArraySplit(np.zeros((2, 4, 4, 1), np.uint8), np.zeros(3))
    s = ArraySplit(np.zeros((2, 4, 4, 1), np.uint8), np.array([0, 1], np.int64))
    assert s.labels.dtype == np.int32 and len(s) == 2


def test_pad_images():
    x = np.full((1, 28, 28, 1), 7, np.uint8)
    y = pad_images(x, 32)
    assert y.shape == (1, 32, 32, 1) and y[0, 2:30, 2:30].min() == 7 and y.sum() == x.sum()
    assert pad_images(x, None) is x
    with pytest.raises(ValueError):
        pad_images(x, 16)


def test_split_train_val_disjoint_and_seeded():
    s = _id_split(100)
    tr, va = split_train_val(s, 20, seed=0)
    assert len(tr) == 80 and len(va) == 20
    assert not set(_ids(tr)) & set(_ids(va))
    assert set(_ids(tr)) | set(_ids(va)) == set(range(100))
    tr2, va2 = split_train_val(s, 20, seed=0)
    np.testing.assert_array_equal(_ids(va), _ids(va2))
    _, va3 = split_train_val(s, 20, seed=1)
    assert set(_ids(va3)) != set(_ids(va))


@pytest.mark.parametrize("parts", [2, 3])
def test_split_disjoint(parts):
    s = _id_split(101, classes=5)
    pieces = split_disjoint(s, parts, seed=0)
    assert len(pieces) == parts
    ids = [set(_ids(p)) for p in pieces]
    assert sum(len(i) for i in ids) == 101 and set().union(*ids) == set(range(101))
    sizes = [len(p) for p in pieces]
    assert max(sizes) - min(sizes) <= 1
    for p in pieces:  # stratified: class counts differ by at most one
        counts = np.bincount(p.labels, minlength=5)
        assert counts.max() - counts.min() <= 1 or len(p) < 5
    again = split_disjoint(s, parts, seed=0)
    assert all(np.array_equal(_ids(a), _ids(b)) for a, b in zip(pieces, again))
    other = split_disjoint(s, parts, seed=1)
    assert any(set(_ids(a)) != set(_ids(b)) for a, b in zip(pieces, other))
    plain = split_disjoint(s, parts, seed=0, stratify=False)
    assert set().union(*(set(_ids(p)) for p in plain)) == set(range(101))


def test_iterate_batches():
    s = _id_split(50)
    batches = list(iterate_batches(s, 16, seed=0))
    assert len(batches) == 3 == num_batches(s, 16)
    for b in batches:
        assert b["image"].shape == (16, 2, 2, 1) and b["image"].dtype == np.uint8
        assert b["label"].shape == (16,) and b["label"].dtype == np.int32
        np.testing.assert_array_equal(b["label"], _ids(ArraySplit(b["image"], b["label"])) % 5)
    seen = np.concatenate([_ids(ArraySplit(b["image"], b["label"])) for b in batches])
    assert len(set(seen)) == 48
    # Deterministic under a seed, different across seeds and across epochs.
    again = list(iterate_batches(s, 16, seed=0))
    assert all(np.array_equal(a["image"], b["image"]) for a, b in zip(batches, again))
    other = list(iterate_batches(s, 16, seed=1))
    assert not np.array_equal(batches[0]["image"], other[0]["image"])
    two = list(iterate_batches(s, 16, seed=0, epochs=2))
    assert len(two) == 6 and not np.array_equal(two[0]["image"], two[3]["image"])
    # No shuffle, keep remainder.
    plain = list(iterate_batches(s, 16, shuffle=False, drop_remainder=False))
    assert [len(b["label"]) for b in plain] == [16, 16, 16, 2] == [16] * 3 + [50 - 48]
    assert num_batches(s, 16, drop_remainder=False) == 4
    np.testing.assert_array_equal(np.concatenate([_ids(ArraySplit(b["image"], b["label"]))
                                                  for b in plain]), np.arange(50))
    # Infinite stream.
    stream = iterate_batches(s, 20, seed=0, epochs=None)
    assert len([next(stream) for _ in range(7)]) == 7
    with pytest.raises(ValueError, match="no batch"):
        next(iterate_batches(s, 64))


def test_unprepared_tfds_dataset_is_a_clear_error(tmp_path, monkeypatch):
    """No prepared data under the default or a given data_dir: DatasetNotFoundError, no download."""
    from rws_jax.data import DatasetNotFoundError, load_tfds_split

    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "default"))
    for data_dir in (None, str(tmp_path / "given")):
        with pytest.raises(DatasetNotFoundError, match="array_record"):
            load_tfds_split("cifar10", "test", data_dir=data_dir)
