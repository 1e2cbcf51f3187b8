"""The released CIFAR-10-C (TFDS cifar10_corrupted) as the pipeline's corrupted test sets.

TFDS is faked with ``tfds.testing.mock_data`` (no network, no TensorFlow, no training).
"""

import numpy as np
import pytest

from rws_jax.corruptions import CORRUPTIONS, UnknownCorruptionError
from rws_jax.data import (
    ArraySplit,
    DatasetNotFoundError,
    DatasetSplits,
    cifar10_corrupted_name,
    load_cifar10_corrupted,
    load_tfds_split,
)
from rws_jax.pipeline.config import PipelineConfig
from rws_jax.pipeline.presets import load_config, preset
from rws_jax.pipeline import Run

tfds = pytest.importorskip("tensorflow_datasets")


def mock(n):
    return tfds.testing.mock_data(num_examples=n, policy=tfds.testing.MockPolicy.USE_CODE)


# ---------------------------------------------------------------- the loader

def test_all_19_corruptions_map_to_tfds_configs():
    names = {cifar10_corrupted_name(c, s) for c in CORRUPTIONS for s in range(1, 6)}
    assert len(names) == 95
    assert cifar10_corrupted_name("glass_blur", 3) == "cifar10_corrupted/frosted_glass_blur_3"
    assert cifar10_corrupted_name("elastic_transform", 1) == "cifar10_corrupted/elastic_1"
    # TFDS spellings are accepted too.
    assert cifar10_corrupted_name("frosted_glass_blur", 3) == "cifar10_corrupted/frosted_glass_blur_3"


def test_loader_shapes_and_max_examples():
    with mock(12):
        full = load_cifar10_corrupted("gaussian_noise", 5)
        head = load_cifar10_corrupted("gaussian_noise", 5, max_examples=5)
    assert full.images.shape == (12, 32, 32, 3) and full.images.dtype == np.uint8
    assert full.labels.shape == (12,) and full.labels.dtype == np.int32
    assert 0 <= full.labels.min() <= full.labels.max() < 10
    assert len(head) == 5
    np.testing.assert_array_equal(head.images, full.images[:5])
    np.testing.assert_array_equal(head.labels, full.labels[:5])


@pytest.mark.parametrize("ours,theirs", [("glass_blur", "frosted_glass_blur_2"), ("elastic_transform", "elastic_4")])
def test_loader_reads_the_renamed_tfds_configs(ours, theirs):
    severity = int(theirs[-1])
    with mock(6):
        via = load_cifar10_corrupted(ours, severity)
        direct = load_tfds_split(f"cifar10_corrupted/{theirs}", "test")
    np.testing.assert_array_equal(via.images, direct.images)
    np.testing.assert_array_equal(via.labels, direct.labels)


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        load_cifar10_corrupted("glass_blur", 5, data_dir=tmp_path)
    msg = str(e.value)
    for part in ("cifar10_corrupted", "frosted_glass_blur_5", "tfds build cifar10_corrupted/frosted_glass_blur_5",
                 "array_record", "corrupted_test=generated", str(tmp_path)):
        assert part in msg, part
    assert isinstance(e.value, FileNotFoundError)


@pytest.mark.parametrize("name,severity,match", [
    ("rain", 5, "valid names: .*gaussian_noise"), ("Fog", 5, "unknown corruption"), (None, 5, "unknown corruption"),
    ("fog", 0, "severity"), ("fog", 6, "severity"), ("fog", 2.5, "severity"), ("fog", True, "severity"),
])
def test_unknown_corruption_or_severity(name, severity, match):
    with pytest.raises(UnknownCorruptionError, match=match):
        load_cifar10_corrupted(name, severity)


# ---------------------------------------------------------------- the config

def test_config_resolves_and_validates_corrupted_test():
    assert PipelineConfig(dataset="cifar10").corrupted_test_mode == "official"
    assert PipelineConfig(dataset="fashion_mnist").corrupted_test_mode == "generated"
    assert PipelineConfig(dataset="cifar100").corrupted_test_mode == "generated"
    assert PipelineConfig(dataset="cifar10", corrupted_test="generated").corrupted_test_mode == "generated"
    assert PipelineConfig(dataset="cifar10", corrupted_test="official").corrupted_test_mode == "official"
    with pytest.raises(ValueError, match="only cifar10 has one"):
        PipelineConfig(dataset="fashion_mnist", corrupted_test="official")
    with pytest.raises(ValueError, match="corrupted_test must be one of"):
        PipelineConfig(dataset="cifar10", corrupted_test="released")
    assert preset("cifar10_vgg16").corrupted_test == "official"
    assert preset("cifar100_vgg16").corrupted_test_mode == "generated"
    assert preset("offline").corrupted_test_mode == "generated"
    assert preset("cifar10_vgg16", corrupted_test="generated").corrupted_test_mode == "generated"
    # round trip through the dict a run directory stores
    cfg = preset("cifar10_vgg16")
    assert PipelineConfig(**cfg.to_dict()) == cfg


def test_config_file_and_override(tmp_path):
    from pathlib import Path

    yaml_file = Path(__file__).resolve().parent.parent / "configs" / "cifar10_vgg16.yaml"
    assert load_config(yaml_file) == preset("cifar10_vgg16")
    assert load_config(yaml_file, overrides=["corrupted_test=generated"]).corrupted_test_mode == "generated"
    with pytest.raises(ValueError, match="corrupted_test"):
        load_config(preset_name="offline", overrides=["corrupted_test=official"])


# ---------------------------------------------------------------- Run.test_set

def _cifar10_cfg(**changes):
    return preset("tiny", name="cifar10_c_test", dataset="cifar10", val_size=4, test_examples=7,
                  transfer_dataset=None, corruptions=["fog", "glass_blur"], **changes)


def test_run_test_set_uses_the_released_cifar10_c(tmp_path):
    logs = []
    run = Run(_cifar10_cfg(), tmp_path / "run", progress=False, log=logs.append)
    assert run.cfg.corrupted_test_mode == "official"
    with mock(20):
        clean = run.data.test_set("clean")
        fog = run.data.test_set("fog")
        glass = run.data.test_set("glass_blur")
        want_fog = load_cifar10_corrupted("fog", 5, max_examples=7)
        want_glass = load_tfds_split("cifar10_corrupted/frosted_glass_blur_5", "test", max_examples=7)
    assert len(clean) == len(fog) == len(glass) == 7
    assert fog.images.shape == (7, 32, 32, 3) and fog.images.dtype == np.uint8
    np.testing.assert_array_equal(fog.images, want_fog.images)
    np.testing.assert_array_equal(fog.labels, want_fog.labels)
    np.testing.assert_array_equal(glass.images, want_glass.images)
    assert run.data.test_set("fog") is fog  # cached
    # Mocked labels are random, so the sanity check (same images, same order) warns.
    if not np.array_equal(fog.labels, clean.labels):
        assert any("warning: CIFAR-10-C fog" in m for m in logs)


def test_run_test_set_generated_option(tmp_path):
    run = Run(_cifar10_cfg(corrupted_test="generated"), tmp_path / "run", progress=False, log=lambda m: None)
    with mock(20):
        clean = run.data.test_set("clean")
        contrast = run.data.test_set("contrast")
        official = load_cifar10_corrupted("contrast", 5, max_examples=7)
    np.testing.assert_array_equal(contrast.labels, clean.labels)
    assert not np.array_equal(contrast.images, clean.images)
    assert not np.array_equal(contrast.images, official.images)
    # contrast is deterministic: the generated set is our corruption of the clean images.
    import jax

    from rws_jax.corruptions import corrupt

    np.testing.assert_array_equal(contrast.images, np.asarray(corrupt(clean.images, "contrast", 5, jax.random.key(1))))


def test_run_with_unprepared_cifar10_c_fails_clearly(tmp_path):
    """Official mode with no CIFAR-10-C in data_dir: the error says what to do (no download)."""
    run = Run(_cifar10_cfg(data_dir=str(tmp_path / "tfds")), tmp_path / "run", progress=False, log=lambda m: None)
    rng = np.random.default_rng(0)
    split = ArraySplit(rng.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 7))
    run.data.__dict__["main"] = DatasetSplits(split, split, split, 10, "cifar10")  # the clean data, without TFDS
    assert run.data.test_set("clean") is split
    with pytest.raises(DatasetNotFoundError, match="corrupted_test=generated"):
        run.data.test_set("fog")
    # The generated option needs no CIFAR-10-C.
    gen = Run(_cifar10_cfg(data_dir=str(tmp_path / "tfds"), corrupted_test="generated"), tmp_path / "gen",
              progress=False, log=lambda m: None)
    gen.data.__dict__["main"] = run.data.main
    assert len(gen.data.test_set("contrast")) == 7


def test_run_all_checks_cifar10_c_before_training(tmp_path):
    """A missing CIFAR-10-C stops the run before any model is trained."""
    from rws_jax.pipeline import run_all

    run = Run(_cifar10_cfg(data_dir=str(tmp_path / "tfds")), tmp_path / "run", progress=False, log=lambda m: None)
    with pytest.raises(DatasetNotFoundError, match="cifar10_corrupted"):
        run_all(run)
    assert not (tmp_path / "run" / "checkpoints").exists()
