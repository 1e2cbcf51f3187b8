"""Test-time auto-patching: a corruption detector on image statistics
(:mod:`rws_jax.autopatching.detector`) and the patcher that turns its scores into a patch per
batch or per image (:mod:`rws_jax.autopatching.autopatcher`)."""

from rws_jax.autopatching.autopatcher import AutoPatcher
from rws_jax.autopatching.detector import (CorruptionDetector, image_features, load_detector, save_detector,
                                           train_detector)

__all__ = ["AutoPatcher", "CorruptionDetector", "image_features", "load_detector", "save_detector", "train_detector"]
