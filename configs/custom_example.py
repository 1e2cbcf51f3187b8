"""A Python config: `rws-jax demo --config configs/custom_example.py`. Defines CONFIG."""

from rws_jax.pipeline import preset

CONFIG = preset("offline", name="resnet20_offline", model="resnet20", model_kwargs={"width": 0.5},
                collections=("params",), keep_units=4)
