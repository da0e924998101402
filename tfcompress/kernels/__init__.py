"""XLA execution kernels: layers that store compressed weights and compute on them.

- :class:`QuantizedDense`, :class:`QuantizedConv2D`, :class:`QuantizedDepthwiseConv2D`
  — int8 or packed-int4 weights with per-output-channel scales; int8 inputs (dynamic
  or calibrated static scale) and int8 × int8 → int32 products, or weight-only.
- :class:`SparseDense` — block-sparse kernel stored as its nonzero blocks; cost
  proportional to the number of blocks (float or int8 blocks).
- :func:`pack_int4` / :func:`unpack_int4` — two signed 4-bit values per byte.
- :func:`convert` — clone a stripped float model onto these layers, folding inference
  BatchNormalization into the layer before it.

The layers need the TensorFlow backend (their computations are XLA-compiled
TensorFlow functions, inlined when the caller is itself ``jit_compile=True``);
``import tfcompress.kernels`` does not import TensorFlow.
"""

from tfcompress.kernels.convert import convert
from tfcompress.kernels.packing import pack_int4
from tfcompress.kernels.packing import unpack_int4
from tfcompress.kernels.quantized_conv import QuantizedConv2D
from tfcompress.kernels.quantized_dense import QuantizedDense
from tfcompress.kernels.quantized_depthwise_conv import QuantizedDepthwiseConv2D
from tfcompress.kernels.sparse_dense import SparseDense

__all__ = [
    "QuantizedConv2D",
    "QuantizedDense",
    "QuantizedDepthwiseConv2D",
    "SparseDense",
    "convert",
    "pack_int4",
    "unpack_int4",
]
