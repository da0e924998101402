"""Pruning granularities: what a mask entry covers.

| granularity | mask variable shape | unit pruned |
| --- | --- | --- |
| :class:`Unstructured` (``"unstructured"``) | the weight's shape | one weight |
| :class:`Structured` (``"structured"``) | the output-channel dims (e.g. ``(filters,)``) | a whole output filter / unit |
| :class:`NM` (``"n:m"``, ``"2:4"``) | the weight's shape | N of every M consecutive inputs kept, exactly |
| :class:`Block` (``"block"``) | ``ceil(rows/bh) × ceil(cols/bw)`` of the weight's matrix view | a ``bh × bw`` block |

The *matrix view* of a weight puts every non-output axis (in order) on the rows and
the output axes on the columns: a Dense kernel is itself, a Conv2D kernel
``(kh, kw, in, out)`` becomes ``(kh·kw·in, out)``, a Conv2DTranspose kernel
``(kh, kw, out, in)`` becomes ``(kh·kw·in, out)``. Block masks are stored per block
so that block-sparse kernels (``tfcompress.kernels``) can consume them directly.

Mask computation runs on the host (numpy) in the mask controller; expanding a stored
mask to the weight's shape in the forward pass uses ``keras.ops`` only.
"""

import math

import keras
import numpy as np
from keras import ops

from tfcompress.pruning._utils import to_numpy


def _norm_axes(axes, ndim):
    return tuple(sorted(a % ndim for a in axes))


def _matrix_perm(shape, out_axes):
    ndim = len(shape)
    out = _norm_axes(out_axes, ndim)
    rows = tuple(a for a in range(ndim) if a not in out)
    perm = rows + out
    r = int(np.prod([shape[a] for a in rows])) if rows else 1
    c = int(np.prod([shape[a] for a in out]))
    return perm, r, c


def _inverse(perm):
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


class Granularity:
    """Base class. ``pattern = True`` granularities (N:M) compute their mask
    directly from the scores and ignore the scheduled sparsity and global
    thresholding; the others are *threshold* granularities: they split a weight into
    units with a score and a size, and the controller prunes the lowest-scoring
    units until the target fraction of parameters is pruned."""

    pattern = False
    name = "granularity"

    def mask_shape(self, shape, spec):
        return tuple(shape)

    def validate(self, shape, spec, where):
        """Raises ``ValueError`` if the weight cannot take this granularity."""

    def units(self, scores, spec):
        """Returns ``(unit_scores, unit_sizes)``, two 1-D numpy arrays."""
        raise NotImplementedError

    def mask_from_units(self, keep, shape, spec):
        """Turns a boolean keep-vector over the units into a stored mask (numpy)."""
        raise NotImplementedError

    def expand(self, mask, shape, spec):
        """Stored mask (tensor) → a tensor broadcastable to the weight (keras.ops)."""
        return mask

    def expand_numpy(self, mask, shape, spec):
        out = to_numpy(self.expand(ops.convert_to_tensor(mask), shape, spec))
        return np.broadcast_to(out, tuple(shape))

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, str(self.get_config())))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="tfcompress")
class Unstructured(Granularity):
    """One mask entry per weight."""

    name = "unstructured"

    def units(self, scores, spec):
        flat = np.asarray(scores, dtype=np.float64).reshape(-1)
        return flat, np.ones_like(flat)

    def mask_from_units(self, keep, shape, spec):
        return keep.reshape(shape)


@keras.saving.register_keras_serializable(package="tfcompress")
class Structured(Granularity):
    """One mask entry per output channel: whole filters (Conv) / units (Dense).

    A unit's score is the sum of its elements' scores (the L1 norm or squared L2
    norm of the filter with :class:`MagnitudeCriterion`). The bias of a pruned
    channel is masked too, so the channel's pre-activation output is exactly 0.
    """

    name = "structured"

    def mask_shape(self, shape, spec):
        ndim = len(shape)
        return tuple(shape[a] for a in _norm_axes(spec.out_axes, ndim))

    def units(self, scores, spec):
        scores = np.asarray(scores, dtype=np.float64)
        perm, r, c = _matrix_perm(scores.shape, spec.out_axes)
        mat = np.transpose(scores, perm).reshape(r, c)
        return mat.sum(axis=0), np.full((c,), float(r))

    def mask_from_units(self, keep, shape, spec):
        return keep.reshape(self.mask_shape(shape, spec))

    def expand(self, mask, shape, spec):
        ndim = len(shape)
        out = _norm_axes(spec.out_axes, ndim)
        bshape = [shape[a] if a in out else 1 for a in range(ndim)]
        return ops.reshape(mask, bshape)


@keras.saving.register_keras_serializable(package="tfcompress")
class NM(Granularity):
    """N:M semi-structured sparsity: in every group of ``m`` consecutive weights
    along the input axis, exactly the ``n`` highest-scoring are kept (sparsity
    ``1 - n/m``; 2:4 is what sparse tensor cores accelerate).

    The scheduled sparsity only gates *when* masks are computed; the pattern fixes
    how many weights are pruned. Depthwise kernels group along their spatial axes.

    Args:
        n: weights kept per group (``1 <= n <= m``).
        m: group size.

    Raises:
        ValueError: if ``n > m`` or either is not a positive integer.
    """

    pattern = True

    def __init__(self, n=2, m=4):
        for k, v in (("n", n), ("m", m)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{k} must be a positive integer; received: {k}={v!r}")
        if n > m:
            raise ValueError(
                f"N:M sparsity needs n <= m; received: n={n!r}, m={m!r}"
            )
        self.n = n
        self.m = m

    @property
    def name(self):
        return f"{self.n}:{self.m}"

    def _perm(self, shape, spec):
        ndim = len(shape)
        ins = _norm_axes(spec.in_axes, ndim)
        rest = tuple(a for a in range(ndim) if a not in ins)
        k = int(np.prod([shape[a] for a in ins]))
        return rest + ins, k

    def validate(self, shape, spec, where):
        _, k = self._perm(shape, spec)
        if k % self.m:
            raise ValueError(
                f"N:M sparsity {self.n}:{self.m} needs the input size of {where} to be "
                f"a multiple of m={self.m}; received: input size {k} (weight shape "
                f"{tuple(shape)})"
            )

    def pattern_mask(self, scores, spec):
        scores = np.asarray(scores, dtype=np.float64)
        perm, k = self._perm(scores.shape, spec)
        moved = np.transpose(scores, perm)
        groups = moved.reshape(-1, self.m)
        # stable ranking: keep the n largest, ties broken by position
        order = np.argsort(-groups, axis=1, kind="stable")
        keep = np.zeros_like(groups, dtype=bool)
        np.put_along_axis(keep, order[:, : self.n], True, axis=1)
        return np.transpose(keep.reshape(moved.shape), _inverse(perm))

    def get_config(self):
        return {"n": self.n, "m": self.m}


@keras.saving.register_keras_serializable(package="tfcompress")
class Block(Granularity):
    """Block sparsity on the weight's matrix view: whole ``bh × bw`` blocks are
    pruned (edge blocks may be smaller). The stored mask has one entry per block.

    ``Block((32, 32))`` gives the masks :class:`tfcompress.kernels.SparseDense`
    consumes. ``Block((4, 1))`` — four consecutive inputs of one output — makes the
    zeros contiguous in TFLite's weight layouts (OHWI convolutions, ``(out, in)``
    fully connected), so a gzipped ``.tflite`` file codes one run of zeros per block
    rather than per weight (``bench/export``: ResNet-20 files).

    Args:
        block_shape: ``(bh, bw)``: rows (inputs) × columns (outputs) per block.

    Raises:
        ValueError: unless ``block_shape`` is two positive integers.
    """

    name = "block"

    def __init__(self, block_shape=(32, 32)):
        bs = tuple(block_shape) if isinstance(block_shape, (list, tuple)) else None
        if (
            bs is None
            or len(bs) != 2
            or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in bs)
        ):
            raise ValueError(
                "block_shape must be two positive integers; received: "
                f"block_shape={block_shape!r}"
            )
        self.block_shape = bs

    def mask_shape(self, shape, spec):
        _, r, c = _matrix_perm(shape, spec.out_axes)
        bh, bw = self.block_shape
        return (math.ceil(r / bh), math.ceil(c / bw))

    def units(self, scores, spec):
        scores = np.asarray(scores, dtype=np.float64)
        perm, r, c = _matrix_perm(scores.shape, spec.out_axes)
        mat = np.transpose(scores, perm).reshape(r, c)
        bh, bw = self.block_shape
        nr, nc = math.ceil(r / bh), math.ceil(c / bw)
        padded = np.zeros((nr * bh, nc * bw))
        padded[:r, :c] = mat
        ones = np.zeros_like(padded)
        ones[:r, :c] = 1.0
        blocks = padded.reshape(nr, bh, nc, bw).sum(axis=(1, 3))
        sizes = ones.reshape(nr, bh, nc, bw).sum(axis=(1, 3))
        return blocks.reshape(-1), sizes.reshape(-1)

    def mask_from_units(self, keep, shape, spec):
        return keep.reshape(self.mask_shape(shape, spec))

    def expand(self, mask, shape, spec):
        perm, r, c = _matrix_perm(shape, spec.out_axes)
        bh, bw = self.block_shape
        full = ops.repeat(ops.repeat(mask, bh, axis=0), bw, axis=1)[:r, :c]
        moved = ops.reshape(full, [shape[a] for a in perm])
        if perm == tuple(range(len(shape))):
            return moved
        return ops.transpose(moved, _inverse(perm))

    def get_config(self):
        return {"block_shape": list(self.block_shape)}


_NAMES = {"unstructured": Unstructured, "structured": Structured}


def get(identifier):
    """Returns a granularity from an instance or a name: ``"unstructured"``,
    ``"structured"``, ``"n:m"`` (2:4), ``"N:M"`` such as ``"1:4"``, ``"block"``
    (32×32 blocks), or a serialized config.

    Raises:
        ValueError: on an unknown granularity.
    """
    if identifier is None:
        return Unstructured()
    if isinstance(identifier, Granularity):
        return identifier
    if isinstance(identifier, str):
        key = identifier.strip().lower()
        if key in _NAMES:
            return _NAMES[key]()
        if key == "n:m":
            return NM(2, 4)
        if key == "block":
            return Block((32, 32))
        parts = key.split(":")
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            return NM(int(parts[0]), int(parts[1]))
    if isinstance(identifier, dict):
        obj = keras.saving.deserialize_keras_object(identifier)
        if isinstance(obj, Granularity):
            return obj
    raise ValueError(
        "granularity must be one of 'unstructured', 'structured', 'n:m' (or 'N:M' "
        "such as '2:4'), 'block', or a Granularity object; received: "
        f"granularity={identifier!r}"
    )
