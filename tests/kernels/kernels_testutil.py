"""Reference computations for the kernel tests: simulated quantization and the
rounding-error bound the quantized layers must stay within."""

import numpy as np

ACT_QMAX = 127.0


def input_step(x, mode, static_scale=None, axes=(-1,)):
    """The int8 input step Δx (broadcastable to ``x``) a layer uses, or 0 for "none"."""
    x = np.asarray(x, np.float64)
    if mode == "none":
        return np.zeros((1,) * x.ndim)
    if mode == "static":
        return np.full((1,) * x.ndim, static_scale, np.float64)
    absmax = np.max(np.abs(x), axis=tuple(axes), keepdims=True)
    return np.where(absmax > 0, absmax / ACT_QMAX, 1.0)


def fake_quant_input(x, step):
    x = np.asarray(x, np.float64)
    if not np.any(step):
        return x
    return np.clip(np.rint(x / step), -ACT_QMAX, ACT_QMAX) * step


def weight_step(kernel, bits, out_axis=-1):
    """Per-output-channel weight step Δw of the symmetric restricted-range grid."""
    kernel = np.asarray(kernel, np.float64)
    out_axis %= kernel.ndim
    axes = tuple(i for i in range(kernel.ndim) if i != out_axis)
    absmax = np.max(np.abs(kernel), axis=axes)
    qmax = 2 ** (bits - 1) - 1
    return np.where(absmax > 0, absmax / qmax, 1.0)


def rounding_bound(linear, x, kernel, dx, dw_full):
    """Bound on |linear(x_q, w_q) - linear(x, w)| for a bilinear map ``linear``.

    With x_q = x + e_x, |e_x| <= Δx/2 (inputs within the clip range) and
    w_q = w + e_w, |e_w| <= Δw/2:
    |linear(x, e_w) + linear(e_x, w) + linear(e_x, e_w)|
        <= linear(|x|, Δw/2) + linear(Δx/2, |w|) + linear(Δx/2, Δw/2).
    ``dx`` broadcasts to ``x``; ``dw_full`` has the kernel's shape.
    """
    ax = np.abs(np.asarray(x, np.float64))
    ex = np.broadcast_to(np.asarray(dx, np.float64) / 2, ax.shape)
    aw = np.abs(np.asarray(kernel, np.float64))
    ew = np.asarray(dw_full, np.float64) / 2
    return (np.asarray(linear(ax, ew), np.float64) + np.asarray(linear(ex, aw), np.float64)
            + np.asarray(linear(ex, ew), np.float64))


def assert_within(actual, expected, bound, rtol=1e-5, atol=1e-5):
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    slack = rtol * np.max(np.abs(expected)) + atol
    excess = np.abs(actual - expected) - (bound + slack)
    assert np.all(excess <= 0), (
        f"max excess over the rounding bound {excess.max():.3g} "
        f"(max |diff| {np.abs(actual - expected).max():.3g}, max bound {bound.max():.3g})")


def block_sparse_kernel(rng, shape, block_shape, sparsity):
    """A random kernel whose blocks are zero with the given fraction (rounded)."""
    k, n = shape
    bk, bn = block_shape
    kb, nb = -(-k // bk), -(-n // bn)
    total = kb * nb
    keep = total - int(round(sparsity * total))
    mask_blocks = np.zeros(total, bool)
    mask_blocks[rng.choice(total, keep, replace=False)] = True
    mask = np.kron(mask_blocks.reshape(kb, nb), np.ones((bk, bn), bool))[:k, :n]
    kernel = rng.standard_normal(shape).astype(np.float32) * 0.1
    # no exact zeros inside kept blocks
    kernel = np.where(kernel == 0, 0.01, kernel)
    return kernel * mask, keep
