"""Packed int4 storage: two signed 4-bit values per byte.

Layout (the same as ``keras.quantizers.pack_int4(..., dtype="int8")``): along the
packed axis, element ``2k`` goes to the low nibble and element ``2k + 1`` to the high
nibble of byte ``k``, both in two's complement; an odd length is padded with one zero.
A packed array therefore has ``ceil(n / 2)`` entries along that axis and half the
bytes of its ``int8`` counterpart.

:func:`pack_int4` and :func:`unpack_int4` run on the host (numpy).
:func:`unpack_int4_graph` is the in-graph (TensorFlow, XLA-compilable) inverse used
by the kernel layers: a shift left then an arithmetic shift right sign-extends the
low nibble, an arithmetic shift right extracts the high one.
"""

import numpy as np

INT4_MIN, INT4_MAX = -8, 7


def _check_axis(axis, ndim, argument="axis"):
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise ValueError(f"{argument} must be an int; received: {argument}={axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{argument} must be in [-{ndim}, {ndim}) for an array of rank "
                         f"{ndim}; received: {argument}={axis}")
    return int(axis) % ndim


def pack_int4(values, axis=-1):
    """Packs integers in ``[-8, 7]`` two per byte along ``axis``.

    Args:
        values: integer array (any integer dtype) with values in ``[-8, 7]``.
        axis: the axis along which consecutive pairs share a byte.

    Returns:
        ``int8`` numpy array with ``ceil(n / 2)`` entries along ``axis``.

    Raises:
        ValueError: if ``values`` is not an integer array of rank >= 1, holds a value
            outside ``[-8, 7]``, or ``axis`` is out of range.

    Example:
        >>> packed = pack_int4(np.array([[-3, 7, 2], [-8, 1, 0]], "int8"), axis=1)
        >>> unpack_int4(packed, length=3, axis=1)
        array([[-3,  7,  2],
               [-8,  1,  0]], dtype=int8)
    """
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.integer) or values.ndim == 0:
        raise ValueError("values must be an integer array of rank >= 1; received: "
                         f"values with dtype={values.dtype} and shape={values.shape}")
    axis = _check_axis(axis, values.ndim)
    if values.size and (values.min() < INT4_MIN or values.max() > INT4_MAX):
        raise ValueError(f"values must lie in [{INT4_MIN}, {INT4_MAX}] to fit 4 bits; "
                         f"received: values in [{values.min()}, {values.max()}]")
    v = np.moveaxis(values.astype(np.int16), axis, 0)
    if v.shape[0] % 2:
        v = np.concatenate([v, np.zeros((1,) + v.shape[1:], v.dtype)], axis=0)
    low = v[0::2] & 0x0F
    high = v[1::2] & 0x0F
    packed = (low | (high << 4)).astype(np.uint8).view(np.int8)
    return np.ascontiguousarray(np.moveaxis(packed, 0, axis))


def unpack_int4(packed, length, axis=-1):
    """Inverse of :func:`pack_int4` (host side).

    Args:
        packed: ``int8`` (or ``uint8``) array from :func:`pack_int4`.
        length: the original length along ``axis`` (``2m - 1`` or ``2m`` for ``m``
            packed entries).
        axis: the packed axis.

    Returns:
        ``int8`` numpy array with values in ``[-8, 7]`` and ``length`` entries along
        ``axis``.

    Raises:
        ValueError: if ``packed`` is not an 8-bit integer array, ``axis`` is out of
            range, or ``length`` does not match the packed size.
    """
    packed = np.asarray(packed)
    if packed.dtype not in (np.int8, np.uint8) or packed.ndim == 0:
        raise ValueError("packed must be an int8 or uint8 array of rank >= 1; received: "
                         f"packed with dtype={packed.dtype} and shape={packed.shape}")
    axis = _check_axis(axis, packed.ndim)
    m = packed.shape[axis]
    if (isinstance(length, (bool, np.bool_)) or not isinstance(length, (int, np.integer))
            or length not in (2 * m - 1, 2 * m) or length < 0):
        raise ValueError(f"length must be {2 * m - 1} or {2 * m} for {m} packed entries "
                         f"along axis {axis}; received: length={length!r}")
    p = np.moveaxis(packed.view(np.int8).astype(np.int16), axis, 0)
    low = ((p & 0x0F) ^ 0x08) - 0x08
    high = p >> 4
    out = np.empty((2 * m,) + p.shape[1:], np.int8)
    out[0::2] = low
    out[1::2] = high
    return np.ascontiguousarray(np.moveaxis(out[:length], 0, axis))


def unpack_int4_graph(packed, length, axis=-1):
    """In-graph :func:`unpack_int4` (TensorFlow ops; XLA-compilable).

    Args:
        packed: ``int8`` tensor with a static shape.
        length: original length along ``axis`` (Python int).
        axis: the packed axis (Python int).

    Returns:
        ``int8`` tensor with ``length`` entries along ``axis``.
    """
    from tfcompress.kernels._common import tf

    tf_ = tf()
    packed = tf_.convert_to_tensor(packed)
    rank = packed.shape.rank
    axis = axis % rank
    low = tf_.bitwise.right_shift(tf_.bitwise.left_shift(packed, 4), 4)
    high = tf_.bitwise.right_shift(packed, 4)
    both = tf_.stack([low, high], axis=axis + 1)
    shape = tf_.unstack(tf_.shape(packed))
    shape = shape[:axis] + [2 * shape[axis]] + shape[axis + 1:]
    out = tf_.reshape(both, tf_.stack(shape))
    if length != 2 * packed.shape[axis]:
        out = out[(slice(None),) * axis + (slice(0, length),)]
    return out
