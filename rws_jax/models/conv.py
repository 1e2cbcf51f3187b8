"""A drop-in ``flax.linen.Conv`` whose lowering is chosen for speed on XLA:CPU.

Why: with jax/jaxlib 0.10 XLA:CPU hands every convolution to YNNPACK. Two shapes that
our CIFAR networks use are very slow there (measured on a 2-core Xeon, batch 128, 3x3,
see ``docs/guides/training.md``):

* convolutions on a tiny feature map (VGG-16's last three convs see 2x2x512): forward
  and input gradient take seconds, where the same arithmetic written as im2col patches
  times the kernel matrix (one GEMM) takes tens of milliseconds;
* the gradient w.r.t. the kernel (a convolution whose "kernel" is the whole HxW output
  gradient) costs several times the forward for wide layers (openxla/xla#34273); nine
  GEMMs, one per kernel tap, ``shifted(x)^T @ dy``, are cheaper there.

:class:`Conv` has the parameters of ``flax.linen.Conv`` (``kernel`` of shape
``(*kernel_size, in_features, features)``, optional ``bias`` of shape ``(features,)``), the
same initialisers and the same dtype promotion, so checkpoints, ``torch_import`` and every
signature/merging code see an identical variable tree. Results equal ``nn.Conv`` up to
float32 rounding (the sums are the same, only their order differs).

``impl`` picks the lowering: ``'xla'`` (exactly ``lax.conv_general_dilated``, i.e.
``nn.Conv``), ``'im2col'`` (patches @ kernel, differentiated by JAX), ``'tap_grad'`` (XLA
convolution forward and input gradient, kernel gradient as per-tap GEMMs) or ``'auto'``
(the default: :func:`choose_impl` decides from the static shapes).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import flax.linen as nn
from jax import lax

PaddingLike = Union[str, int, Sequence[Union[int, Tuple[int, int]]]]
IMPLS = ("auto", "xla", "im2col", "tap_grad")

_DN = ("NHWC", "HWIO", "NHWC")

# 'auto' thresholds (measured, see docs/guides/training.md).
IM2COL_MAX_OUT_PIXELS = 4        # output H*W at or below this: im2col
TAP_GRAD_MIN_CHANNEL_PRODUCT = 8192  # in_channels * out_channels at or above this: per-tap kernel grad


def _pairs(v, n: int = 2) -> Tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    return tuple(int(a) for a in v)


def _explicit_padding(padding: PaddingLike, kernel: Tuple[int, int], strides: Tuple[int, int],
                      in_hw: Tuple[int, int]) -> Tuple[Tuple[int, int], ...]:
    """Padding as ((top, bottom), (left, right)), as ``lax`` resolves 'SAME'/'VALID'."""
    if isinstance(padding, str):
        return tuple(lax.padtype_to_pads(in_hw, kernel, strides, padding.upper()))
    if isinstance(padding, int):
        return ((padding, padding),) * 2
    out = []
    for p in padding:
        out.append((p, p) if isinstance(p, int) else (int(p[0]), int(p[1])))
    if len(out) != 2:
        raise ValueError(f"Conv: 2-D padding expected, got {padding!r}")
    return tuple(out)


def _out_hw(in_hw, kernel, strides, pads):
    return tuple((in_hw[i] + pads[i][0] + pads[i][1] - kernel[i]) // strides[i] + 1 for i in range(2))


def choose_impl(x_shape, kernel_shape, strides, pads) -> str:
    """The lowering ``'auto'`` uses for an NHWC input and HWIO kernel (static shapes)."""
    kh, kw, cin, cout = kernel_shape
    ho, wo = _out_hw(x_shape[1:3], (kh, kw), strides, pads)
    if ho * wo <= IM2COL_MAX_OUT_PIXELS and kh * kw > 1:
        return "im2col"
    if cin * cout >= TAP_GRAD_MIN_CHANNEL_PRODUCT:
        return "tap_grad"
    return "xla"


def _taps(x, kernel_hw, strides, pads):
    """The kh*kw shifted (strided) views of the padded input, (kh, kw) row-major, each
    [N, Ho, Wo, C]: tap (i, j) is what kernel element (i, j) multiplies."""
    kh, kw = kernel_hw
    sh, sw = strides
    n, h, w, c = x.shape
    ho, wo = _out_hw((h, w), kernel_hw, strides, pads)
    xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    return [lax.slice(xp, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c), (1, sh, sw, 1))
            for i in range(kh) for j in range(kw)]


def _xla_conv(x, kernel, strides, pads, precision):
    return lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=_DN, precision=precision)


def _im2col_conv(x, kernel, strides, pads, precision):
    kh, kw, cin, cout = kernel.shape
    taps = _taps(x, (kh, kw), strides, pads)
    p = taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)
    return jnp.einsum("nhwk,ko->nhwo", p, kernel.reshape(kh * kw * cin, cout), precision=precision)


def _tap_kernel_grad(x, g, kernel_shape, strides, pads, precision):
    kh, kw, cin, cout = kernel_shape
    gm = g.reshape(-1, cout)
    rows = [jnp.einsum("kc,ko->co", t.reshape(-1, cin), gm, precision=precision)
            for t in _taps(x, (kh, kw), strides, pads)]
    return jnp.stack(rows).reshape(kernel_shape)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _tap_grad_conv(x, kernel, strides, pads, precision):
    return _xla_conv(x, kernel, strides, pads, precision)


def _tap_grad_fwd(x, kernel, strides, pads, precision):
    return _xla_conv(x, kernel, strides, pads, precision), (x, kernel)


def _tap_grad_bwd(strides, pads, precision, res, g):
    x, kernel = res
    _, vjp_x = jax.vjp(lambda x_: _xla_conv(x_, kernel, strides, pads, precision), x)
    (dx,) = vjp_x(g)
    dk = _tap_kernel_grad(x, g, kernel.shape, strides, pads, precision).astype(kernel.dtype)
    return dx, dk


_tap_grad_conv.defvjp(_tap_grad_fwd, _tap_grad_bwd)


def conv2d(x, kernel, strides=(1, 1), padding: PaddingLike = "SAME", *, impl: str = "auto",
           precision=None):
    """2-D convolution of an NHWC ``x`` with an HWIO ``kernel`` (no dilation, no groups),
    the same result as ``lax.conv_general_dilated`` up to float rounding, lowered by
    ``impl`` (see the module docstring)."""
    if impl not in IMPLS:
        raise ValueError(f"conv impl must be one of {IMPLS}, got {impl!r}")
    strides = _pairs(strides)
    kernel_hw = tuple(kernel.shape[:2])
    pads = _explicit_padding(padding, kernel_hw, strides, tuple(x.shape[1:3]))
    if impl == "auto":
        impl = choose_impl(x.shape, kernel.shape, strides, pads)
    if impl == "im2col":
        return _im2col_conv(x, kernel, strides, pads, precision)
    if impl == "tap_grad":
        return _tap_grad_conv(x, kernel, strides, pads, precision)
    return _xla_conv(x, kernel, strides, pads, precision)


class Conv(nn.Module):
    """``flax.linen.Conv`` for 2-D NHWC inputs, same parameters, faster lowering on CPU.

    Attributes as in ``flax.linen.Conv`` (``features``, ``kernel_size``, ``strides``,
    ``padding``, ``use_bias``, ``dtype``, ``param_dtype``, ``precision``, ``kernel_init``,
    ``bias_init``); no input/kernel dilation and no feature groups. ``impl``: ``'auto'``
    (default), ``'xla'``, ``'im2col'`` or ``'tap_grad'`` (module docstring).
    """

    features: int
    kernel_size: Sequence[int]
    strides: Union[None, int, Sequence[int]] = 1
    padding: PaddingLike = "SAME"
    use_bias: bool = True
    dtype: Optional[Any] = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    kernel_init: Callable = nn.linear.default_kernel_init
    bias_init: Callable = nn.initializers.zeros_init()
    impl: str = "auto"

    @nn.compact
    def __call__(self, x):
        kernel_size = _pairs(self.kernel_size)
        if len(kernel_size) != 2 or x.ndim != 4:
            raise ValueError(f"Conv: 2-D kernel and NHWC input expected, got kernel {kernel_size}, "
                             f"input shape {x.shape}")
        strides = _pairs(1 if self.strides is None else self.strides)
        kernel = self.param("kernel", self.kernel_init, kernel_size + (x.shape[-1], self.features),
                            self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = conv2d(x, kernel, strides, self.padding, impl=self.impl, precision=self.precision)
        if bias is not None:
            y = y + bias.reshape((1, 1, 1, -1))
        return y


# ----------------------------------------------------------------------------- max-pool
def _window_2x2(x):
    n, h, w, c = x.shape
    xr = x[:, : 2 * (h // 2), : 2 * (w // 2), :].reshape(n, h // 2, 2, w // 2, 2, c)
    return xr[:, :, 0, :, 0], xr[:, :, 0, :, 1], xr[:, :, 1, :, 0], xr[:, :, 1, :, 1]


@jax.custom_vjp
def max_pool_2x2(x):
    """2x2 stride-2 max-pool of an NHWC ``x`` (odd sizes floored), as
    ``nn.max_pool(x, (2, 2), strides=(2, 2))``, with the same gradient (all of it to the
    first maximum of each window in row-major order, like XLA's select-and-scatter) but
    computed elementwise: XLA:CPU expands the select-and-scatter of ``nn.max_pool``'s
    gradient into a variadic reduce-window over four index iotas plus a scatter."""
    a, b, c, d = _window_2x2(x)
    return jnp.maximum(jnp.maximum(a, b), jnp.maximum(c, d))


def _max_pool_fwd(x):
    y = max_pool_2x2(x)
    return y, (x, y)


def _max_pool_bwd(res, g):
    x, y = res
    a, b, c, d = _window_2x2(x)
    ta = a == y
    tb = (b == y) & ~ta
    tc = (c == y) & ~(ta | tb)
    td = ~(ta | tb | tc)
    zero = jnp.zeros((), g.dtype)
    ga, gb, gc, gd = (jnp.where(t, g, zero) for t in (ta, tb, tc, td))
    n, h, w, ch = x.shape
    h2, w2 = h // 2, w // 2
    dx = jnp.stack([jnp.stack([ga, gb], axis=3), jnp.stack([gc, gd], axis=3)], axis=2)
    dx = dx.reshape(n, 2 * h2, 2 * w2, ch)
    if (2 * h2, 2 * w2) != (h, w):
        dx = jnp.pad(dx, ((0, 0), (0, h - 2 * h2), (0, w - 2 * w2), (0, 0)))
    return (dx,)


max_pool_2x2.defvjp(_max_pool_fwd, _max_pool_bwd)
