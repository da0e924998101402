"""Kernel decompositions (NumPy / TensorLy) and the ranks that meet a budget.

Kernels are in Keras layouts: Dense ``(in, out)``, Conv2D ``(kh, kw, in, out)``.

* SVD of a Dense kernel: ``W ≈ A·B`` with ``A = U_r·√S_r`` (in, r) and
  ``B = √S_r·V_rᵀ`` (r, out);
* Tucker-2 of a convolution kernel over its channel modes:
  ``K ≈ G ×₃ U_in ×₄ U_out`` with core ``G`` (kh, kw, r_in, r_out) — a 1×1
  convolution (U_in), the k×k core, a 1×1 convolution (U_outᵀ);
* CP of a convolution kernel: ``K ≈ Σ_r λ_r · h_r ⊗ w_r ⊗ c_r ⊗ f_r`` — a 1×1
  convolution (c), a k×1 and a 1×k depthwise convolution (h, w), a 1×1
  convolution (λ·f).

Example::

    kernel = model.get_layer("conv2").kernel.numpy()          # (3, 3, 32, 64)
    first, core, last = tucker2(kernel, tucker2_ranks(kernel, ratio=0.25))
    a, b = svd(dense_kernel, svd_rank(dense_kernel, energy=0.9))
"""

import math
import numbers
import warnings

import numpy as np


def check_fraction(value, arg):
    """A number in (0, 1]."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(float(value)) or not 0 < value <= 1):
        raise ValueError(f"{arg} must be a number in (0, 1]; received: {arg}={value!r}")
    return float(value)


def _energy_rank(singular_values, energy):
    """Smallest rank whose squared singular values keep ``energy`` of the total."""
    power = np.asarray(singular_values, dtype=np.float64) ** 2
    if power.sum() == 0:
        return 1
    kept = np.cumsum(power) / power.sum()
    return int(min(len(power), np.searchsorted(kept, energy - 1e-12) + 1))


def _unfold(kernel, mode):
    return np.moveaxis(kernel, mode, 0).reshape(kernel.shape[mode], -1)


# --------------------------------------------------------------------------- SVD
def svd_rank(kernel, ratio=None, energy=None):
    """Rank of the SVD of a Dense kernel (in, out) for a budget.

    Args:
        ratio: fraction of the kernel's ``in·out`` weights the two factors may
            hold: ``r·(in + out) ≤ ratio·in·out`` (``r ≥ 1``).
        energy: fraction of ``Σσ²`` to keep.
    """
    n_in, n_out = kernel.shape
    if energy is not None:
        return _energy_rank(np.linalg.svd(kernel, compute_uv=False), energy)
    return max(1, int(ratio * n_in * n_out // (n_in + n_out)))


def svd(kernel, rank):
    """``(A, B)`` with ``A @ B`` the best rank-``rank`` approximation of ``kernel``."""
    u, s, vt = np.linalg.svd(np.asarray(kernel, dtype=np.float64), full_matrices=False)
    root = np.sqrt(s[:rank])
    return (u[:, :rank] * root).astype(np.float32), (root[:, None] * vt[:rank]).astype(np.float32)


# --------------------------------------------------------------------------- Tucker-2
def tucker2_ranks(kernel, ratio=None, energy=None):
    """``(r_in, r_out)`` of a Tucker-2 decomposition of a (kh, kw, in, out) kernel.

    ``energy`` keeps that fraction of each channel mode's unfolding energy;
    ``ratio`` scales both channel counts by one factor ``t`` chosen so that
    ``in·r_in + kh·kw·r_in·r_out + r_out·out ≤ ratio·kh·kw·in·out`` (ranks are at
    least 1; a budget below the rank-(1, 1) size gives (1, 1)).
    """
    kh, kw, n_in, n_out = kernel.shape
    if energy is not None:
        r_in, r_out = (_energy_rank(np.linalg.svd(_unfold(kernel, mode), compute_uv=False),
                                    energy) for mode in (2, 3))
        return _reachable(kh * kw, r_in, r_out)
    # kh·kw·in·out·t² + (in² + out²)·t − ratio·kh·kw·in·out = 0
    a, b, c = kh * kw * n_in * n_out, n_in**2 + n_out**2, -ratio * kh * kw * n_in * n_out
    t = (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)
    r_in, r_out = max(1, int(t * n_in)), max(1, int(t * n_out))
    # a rank floored up to 1 (few channels) can break the budget: shrink the other
    while (n_in * r_in + kh * kw * r_in * r_out + r_out * n_out > ratio * a
           and (r_in > 1 or r_out > 1)):
        if r_in == 1 or (r_out > 1 and r_out / n_out >= r_in / n_in):
            r_out -= 1
        else:
            r_in -= 1
    return _reachable(kh * kw, r_in, r_out)


def _reachable(taps, r_in, r_out):
    """Tucker ranks the core can have: one channel rank is at most ``taps`` times the
    other (the rank of the core's unfolding); a larger one would only add weights."""
    return min(r_in, taps * r_out), min(r_out, taps * r_in)


def tucker2(kernel, ranks):
    """``(first, core, last)``: 1×1 kernel (1, 1, in, r_in), core (kh, kw, r_in, r_out),
    1×1 kernel (1, 1, r_out, out)."""
    from tensorly.decomposition import partial_tucker

    (core, (u_in, u_out)), _ = partial_tucker(
        np.asarray(kernel, dtype=np.float64), rank=list(ranks), modes=[2, 3], init="svd")
    return (u_in[None, None].astype(np.float32), np.asarray(core, dtype=np.float32),
            u_out.T[None, None].astype(np.float32))


# --------------------------------------------------------------------------- CP
def cp_rank(kernel, ratio):
    """CP rank ``R`` with ``R·(kh + kw + in + out) ≤ ratio·kh·kw·in·out``."""
    kh, kw, n_in, n_out = kernel.shape
    return max(1, int(ratio * kh * kw * n_in * n_out // (kh + kw + n_in + n_out)))


def cp(kernel, rank, n_iter_max=200, seed=0):
    """``(first, vertical, horizontal, last)``: 1×1 (1, 1, in, R), depthwise (kh, 1, R, 1),
    depthwise (1, kw, R, 1), 1×1 (1, 1, R, out) — their composition approximates
    ``kernel`` with rank ``R`` (alternating least squares, TensorLy's ``parafac``)."""
    from tensorly.decomposition import parafac

    with warnings.catch_warnings():
        # the SVD initialization of a mode shorter than the rank (a 3-tap mode) is
        # padded by TensorLy, which warns about it
        warnings.filterwarnings("ignore", message="Trying to compute SVD with n_eigenvecs")
        decomposition = parafac(np.asarray(kernel, dtype=np.float64), rank=rank, init="svd",
                                n_iter_max=n_iter_max, random_state=seed, tol=1e-10,
                                normalize_factors=True)
    weights, factors = decomposition.weights, decomposition.factors
    # λ_r spread evenly over the four unit-norm factors: factors of one scale keep the
    # four chained layers equally conditioned for fine-tuning (λ in the last layer alone
    # made SGD fine-tuning of a CP ResNet-8 stall ~20 points below Tucker's)
    h, w, c, f = (factor * np.abs(weights)[None, :] ** 0.25 for factor in factors)
    f = f * np.sign(weights)[None, :]
    return (c[None, None].astype(np.float32), h[:, None, :, None].astype(np.float32),
            w[None, :, :, None].astype(np.float32), f.T[None, None].astype(np.float32))
