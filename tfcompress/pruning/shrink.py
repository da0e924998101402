"""``shrink``: structured surgery — rebuild a model with its pruned filters removed.

After structured (filter) pruning a pruned filter still costs its parameters and
MACs: ``strip`` only zeroes it. :func:`shrink` rebuilds the functional graph with
those channels *physically removed* — the producing Conv/Dense layer's output
channels, the per-channel layers after it (BatchNorm, activations, pooling,
depthwise convolutions, residual ``Add`` s) and the input channels of every
consumer (Conv, Dense, Dense after ``Flatten``) — so the model is really smaller
and faster. The result computes **exactly** the function of the stripped model.

Exactness: a removed channel is not zero downstream
=======================================================

A pruned filter outputs a *constant*: its kernel is zero, so a Conv/Dense gives
``bias`` (0 for a masked bias), and a following BatchNorm turns it into
``beta - mean·gamma/sqrt(var + eps)`` — generally nonzero, and trained (beta still
gets gradients). ReLU and other elementwise layers map the constant to another
constant; ``Add`` sums constants. ``shrink`` propagates these per-channel constants
forward through the graph and removes a channel only where every *consumer*
(a layer that mixes channels: Conv, Dense) either sees a constant on it or has
all-zero weights for it; the constant's contribution is then folded into that
consumer:

* **Dense, Dense after Flatten, Conv with ``padding="valid"`` or a 1×1 kernel** — a
  constant input channel ``c`` adds the same ``v_c · Σ_taps W[..., c, o]`` at every
  output position: it is added to the consumer's bias (``use_bias`` is switched on
  if needed; with Flatten, each spatial position's rows are summed).
* **Conv with spatial zero padding** (``"same"``, ``"causal"``, kernel > 1): at the
  border some taps fall on the zero padding, so the contribution varies with the
  position and no bias can hold it. Two ways to stay exact (``shrink(fold=…)``):

  - ``fold="bias_map"`` (default): when the consumer's input has a static spatial
    size, the contribution is a fixed ``(*spatial_out, C_out)`` map — the consumer
    applied, with its padding, strides and dilation, to the constant input:
    ``map[y, o] = Σ_taps Σ_c v_c · W[tap, c, o] · [x(y, tap) is not padding]``. It is
    computed in float64 and added after the consumer by a
    :class:`~tfcompress.pruning.PositionBias` layer (which also takes over the
    consumer's fused activation, since the map must be added before it). Every
    removable channel is removed. A map that comes out uniform (e.g. the input is
    too small for the border to matter differently) goes into the bias instead.
    The shrunk model then only accepts that spatial input size (the model input's
    static shape fixed it already).
  - ``fold="carrier"`` (and the fallback for a consumer whose input spatial size is
    not static): keep **one** of the removable constant channels of that tensor as
    a *carrier* (the one with the largest ``|v_k|``) and add
    ``Σ_c (v_c / v_k) · W[..., c, :]`` to the carrier's input weights. The carrier
    is zero-padded exactly like the removed channels, so the result is exact at
    every position and for every input size, at the cost of one extra input
    channel per such tensor (odd widths such as 9/17/33 that vectorize poorly).

  Channels whose constant is 0 (e.g. a negative BN constant after ReLU) need
  nothing.

Residual ``Add`` groups (and every other chain of per-channel layers) share one
channel set: a channel is removed from the whole group only if it is removable at
every consumer of every tensor in the group — i.e. the group keeps the **union**
of the channels alive in any branch. To remove residual channels, prune the
layers of such a group with one shared channel mask
(``prune_model(..., granularity="structured", channel_groups="auto")``, see
:func:`channel_groups`); otherwise only block-internal channels go. Depthwise convolutions
(``depth_multiplier=1``) belong to their input's group: a channel removed upstream
is removed from the depthwise kernel, and a pruned depthwise channel removes the
channel feeding it (when nothing else reads it). Through a depthwise conv with
zero padding a nonzero constant stops being constant (border effect), which keeps
that channel.

Supported layers: Conv1D/2D/3D and Dense (``groups=1``, channels-last) as producers
and consumers; DepthwiseConv1D/2D (``depth_multiplier=1``); BatchNormalization
(last axis); ReLU/LeakyReLU/ELU/elementwise ``Activation``; Dropout and other
inference-identity layers; Max/Average/Global pooling; ZeroPadding; Cropping;
Add/Subtract/Average/Maximum/Minimum/Multiply; Flatten. Any other layer (Concatenate,
Reshape, LayerNormalization, SeparableConv, transposed convs, layers called more
than once …) is left intact and *freezes* the channels of its input and output
tensors (they are kept, which is always exact). Model inputs and outputs are
frozen too, so the classifier's outputs are never removed.
"""

import string

import keras
import numpy as np

from tfcompress._cloning import clone_model
from tfcompress.pruning._utils import to_numpy
from tfcompress.pruning.controller import collect_wrappers
from tfcompress.pruning.dcil import functional_view
from tfcompress.pruning.granularity import Structured
from tfcompress.pruning.position_bias import PositionBias
from tfcompress.pruning.prune_model import _fresh_copy
from tfcompress.pruning.prune_model import _is_cloneable
from tfcompress.pruning.prune_model import clone_with
from tfcompress.pruning.strip import strip
from tfcompress.pruning.wrapper import PruneWrapper

L = keras.layers
_CONVS = (L.Conv1D, L.Conv2D, L.Conv3D)
_TRANSPOSED = (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)
_DEPTHWISE = (L.DepthwiseConv1D, L.DepthwiseConv2D)
_IDENTITY = (
    L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D,
    L.GaussianNoise, L.GaussianDropout, L.AlphaDropout, L.ActivityRegularization,
    L.Identity,
    L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D,
    L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D,
    L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
    L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D,
    L.Cropping1D, L.Cropping2D, L.Cropping3D,
)
_ELEMENTWISE = (L.ReLU, L.LeakyReLU, L.ELU, L.Activation)
_ZERO_PAD = (L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D)
_MERGE = {
    L.Add: lambda vs: np.sum(vs, axis=0),
    L.Subtract: lambda vs: vs[0] - vs[1],
    L.Average: lambda vs: np.mean(vs, axis=0),
    L.Maximum: lambda vs: np.max(vs, axis=0),
    L.Minimum: lambda vs: np.min(vs, axis=0),
    L.Multiply: lambda vs: np.prod(vs, axis=0),
}


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _is_mixer(layer):
    """Conv/Dense whose input and output channels shrink can rewrite."""
    if isinstance(layer, L.Dense):
        return True
    if isinstance(layer, _CONVS) and not isinstance(layer, _TRANSPOSED + _DEPTHWISE):
        return _channels_last(layer) and getattr(layer, "groups", 1) == 1
    return False


def _is_depthwise(layer):
    return (
        isinstance(layer, _DEPTHWISE)
        and _channels_last(layer)
        and layer.depth_multiplier == 1
    )


def _is_bn(layer, rank):
    axis = layer.axis if isinstance(layer.axis, int) else None
    if isinstance(layer.axis, (list, tuple)) and len(layer.axis) == 1:
        axis = layer.axis[0]
    return axis is not None and (axis == -1 or axis == rank - 1)


def _elementwise(layer):
    if not isinstance(layer, _ELEMENTWISE):
        return False
    if isinstance(layer, L.Activation):
        name = getattr(layer.activation, "__name__", "")
        return name not in ("softmax", "log_softmax")
    return True


def _uniform(layer):
    """Whether a constant input channel contributes the same value at every output
    position (no spatial zero padding reaches the kernel)."""
    if isinstance(layer, L.Dense):
        return True
    spatial = tuple(layer.kernel_size)
    return layer.padding == "valid" or all(k == 1 for k in spatial)


_FOLDS = ("bias_map", "carrier")


def _tap_masks(in_size, kernel, stride, dilation, padding):
    """``(out_size, kernel)`` 0/1 matrix along one spatial dimension: whether output
    position ``i``'s tap ``t`` reads a real input pixel (1) or the zero padding (0)."""
    effective = (kernel - 1) * dilation + 1
    if padding == "same":
        out = -(-in_size // stride)
        total = max((out - 1) * stride + effective - in_size, 0)
        before = total // 2
    elif padding == "causal":
        total = before = effective - 1
        out = (in_size + total - effective) // stride + 1
    else:  # valid
        total = before = 0
        out = (in_size - effective) // stride + 1
    pos = (np.arange(out)[:, None] * stride + np.arange(kernel)[None, :] * dilation - before)
    return ((pos >= 0) & (pos < in_size)).astype(np.float64)


def _bias_map(layer, in_spatial, taps):
    """The constant-input contribution of a zero-padded conv at every output position.

    Args:
        layer: the Conv layer (its padding, strides and dilation are used).
        in_spatial: static spatial size of its input.
        taps: ``(*kernel, out)`` per-tap weights already summed over the constant
            input channels, ``Σ_c v_c · W[..., c, :]``.

    Returns:
        ``(*spatial_out, out)`` float64 map.
    """
    rank = len(in_spatial)
    masks = [
        _tap_masks(int(n), int(k), int(s), int(d), layer.padding)
        for n, k, s, d in zip(in_spatial, layer.kernel_size, layer.strides,
                              layer.dilation_rate)
    ]
    outs, kern = string.ascii_lowercase[:rank], string.ascii_lowercase[rank:2 * rank]
    spec = ",".join(o + k for o, k in zip(outs, kern)) + f",{kern}z->{outs}z"
    return np.einsum(spec, *masks, taps)


# --------------------------------------------------------------------------- graph
class _Tensor:
    __slots__ = ("key", "channels", "positions", "shape", "const", "value")

    def __init__(self, key, channels, positions, shape=None):
        self.key = key
        self.channels = channels
        self.positions = positions
        self.shape = shape  # the KerasTensor's shape (batch dimension included)
        self.const = np.zeros((positions, channels), dtype=bool)
        self.value = np.zeros((positions, channels), dtype=np.float64)

    def const_channels(self):
        return self.const.all(axis=0)


class _Groups:
    """Union-find over tensors: tensors linked by per-channel layers share one
    channel set."""

    def __init__(self):
        self.parent = {}
        self.frozen = set()

    def add(self, key):
        self.parent.setdefault(key, key)

    def find(self, key):
        root = key
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[key] != root:
            self.parent[key], key = root, self.parent[key]
        return root

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
            if rb in self.frozen:
                self.frozen.add(ra)

    def freeze(self, key):
        self.frozen.add(self.find(key))


def _weights(layer):
    return [np.asarray(to_numpy(v), dtype=np.float64) for v in layer.weights]


class _Analysis:
    """Channel groups, consumers (``exits``) and per-channel constants of a flat
    functional model, in topological order."""

    def __init__(self, model, constants=True):
        self.model = model
        self.tensors = {}
        self.groups = _Groups()
        self.nodes = []  # (layer, input keys, output keys, kind)
        self.exits = []  # (tensor key, layer)
        self._walk()
        if constants:
            self._propagate()

    # ---------------------------------------------------------------- structure
    def _tensor(self, kt, channels=None, positions=1):
        key = id(kt)
        if key not in self.tensors:
            c = channels if channels is not None else kt.shape[-1]
            if c is None:
                c = 0
            self.tensors[key] = _Tensor(key, int(c), int(positions), tuple(kt.shape))
            self.groups.add(key)
        return key

    def _walk(self):
        model = self.model
        depth_keys = sorted(model._nodes_by_depth.keys(), reverse=True)
        ordered = [n for d in depth_keys for n in model._nodes_by_depth[d]]
        uses = {}
        for node in ordered:
            if node.operation is not None and not node.is_input:
                uses[id(node.operation)] = uses.get(id(node.operation), 0) + 1
        for kt in model.inputs:
            self.groups.freeze(self._tensor(kt))
        for node in ordered:
            layer = node.operation
            if layer is None or node.is_input:
                continue
            ins, outs = list(node.input_tensors), list(node.output_tensors)
            for kt in ins:
                self._tensor(kt)
            kind = self._classify(layer, ins, outs, uses[id(layer)])
            in_keys = [id(kt) for kt in ins]
            if kind == "flatten":
                src = self.tensors[in_keys[0]]
                spatial = int(np.prod(ins[0].shape[1:-1])) if len(ins[0].shape) > 2 else 1
                out_keys = [self._tensor(outs[0], src.channels, src.positions * spatial)]
            else:
                out_keys = [self._tensor(kt) for kt in outs]
            self.nodes.append((layer, in_keys, out_keys, kind))
            if kind in ("perchannel", "flatten", "depthwise", "bn", "merge"):
                for k in in_keys + out_keys:
                    self.groups.union(in_keys[0], k)
            elif kind == "mixer":
                self.exits.append((in_keys[0], layer))
            else:  # frozen: keep every channel it touches
                for k in in_keys + out_keys:
                    self.groups.freeze(k)
        for kt in model.outputs:
            self.groups.freeze(id(kt))

    def _classify(self, layer, ins, outs, uses):
        if isinstance(layer, PruneWrapper):
            layer = layer.layer  # channel_groups() may look at a wrapped model
        if uses != 1 or len(outs) != 1 or isinstance(layer, keras.Model):
            return "frozen"
        if any(kt.shape[-1] is None for kt in ins + outs):
            return "frozen"
        if isinstance(layer, tuple(_MERGE)):
            shapes = {tuple(kt.shape[1:]) for kt in ins + outs}
            return "merge" if len(shapes) == 1 and type(layer) in _MERGE else "frozen"
        if len(ins) != 1:
            return "frozen"
        if _is_mixer(layer):
            return "mixer"
        if _is_depthwise(layer):
            return "depthwise"
        if isinstance(layer, L.BatchNormalization):
            return "bn" if _is_bn(layer, len(ins[0].shape)) else "frozen"
        if isinstance(layer, L.Flatten):
            static = all(d is not None for d in ins[0].shape[1:])
            return "flatten" if static and _channels_last(layer) else "frozen"
        if isinstance(layer, _IDENTITY) or _elementwise(layer) or isinstance(layer, _ZERO_PAD):
            if not _channels_last(layer):
                return "frozen"
            return "perchannel" if ins[0].shape[-1] == outs[0].shape[-1] else "frozen"
        return "frozen"

    # ---------------------------------------------------------------- constants
    def _propagate(self):
        for layer, in_keys, out_keys, kind in self.nodes:
            out = self.tensors[out_keys[0]]
            if kind == "frozen":
                continue
            src = self.tensors[in_keys[0]]
            if kind == "mixer":
                w = _weights(layer)
                kernel = w[0]
                bias = w[1] if layer.use_bias else np.zeros(kernel.shape[-1])
                flat = kernel.reshape(-1, kernel.shape[-1])
                dead = ~flat.any(axis=0)
                value = _activate(layer, np.where(dead, bias, 0.0))
                if value is not None:
                    out.const[:] = dead[None, :]
                    out.value[:] = np.where(dead, value, 0.0)[None, :]
            elif kind == "depthwise":
                w = _weights(layer)
                kernel = w[0][..., 0]  # (*k, C)
                bias = w[1] if layer.use_bias else np.zeros(kernel.shape[-1])
                dead = ~kernel.reshape(-1, kernel.shape[-1]).any(axis=0)
                c_in, v_in = src.const_channels(), src.value[0]
                taps = kernel.reshape(-1, kernel.shape[-1]).sum(axis=0)
                through = c_in & ((v_in == 0) | _uniform(layer))
                const = dead | through
                value = _activate(
                    layer, np.where(dead, bias, np.where(through, v_in * taps + bias, 0.0))
                )
                if value is not None:
                    out.const[:] = const[None, :]
                    out.value[:] = np.where(const, value, 0.0)[None, :]
            elif kind == "bn":
                out.const[:] = src.const
                out.value[:] = np.where(src.const, _bn_apply(layer, src), 0.0)
            elif kind == "merge":
                srcs = [self.tensors[k] for k in in_keys]
                const = np.logical_and.reduce([s.const for s in srcs])
                value = _MERGE[type(layer)](np.stack([s.value for s in srcs]))
                out.const[:] = const
                out.value[:] = np.where(const, value, 0.0)
            elif kind == "flatten":
                reps = out.positions // src.positions
                out.const[:] = np.tile(src.const, (reps, 1))
                out.value[:] = np.tile(src.value, (reps, 1))
            elif isinstance(layer, _ZERO_PAD):
                out.const[:] = src.const & (src.value == 0)
                out.value[:] = 0.0
            elif _elementwise(layer):
                x = np.where(src.const, src.value, 0.0).astype("float32")
                y = np.asarray(to_numpy(layer(x)), dtype=np.float64)
                out.const[:] = src.const
                out.value[:] = np.where(src.const, y, 0.0)
            else:  # identity-like on constants (dropout, pooling, cropping)
                out.const[:] = src.const
                out.value[:] = src.value


def _activate(layer, values):
    """The layer's own (fused) activation applied to pre-activation constants;
    ``None`` when it mixes channels (softmax)."""
    activation = getattr(layer, "activation", None)
    if activation is None:
        return values
    if getattr(activation, "__name__", "") in ("softmax", "log_softmax"):
        return None
    out = activation(np.asarray(values, dtype="float32")[None])
    return np.asarray(to_numpy(out), dtype=np.float64)[0]


def _bn_apply(layer, t):
    params = {
        v.path.split("/")[-1]: np.asarray(to_numpy(v), dtype=np.float64) for v in layer.weights
    }
    shape = (t.positions, t.channels)
    gamma = params["gamma"].reshape(shape) if layer.scale else 1.0
    beta = params["beta"].reshape(shape) if layer.center else 0.0
    mean = params["moving_mean"].reshape(shape)
    var = params["moving_variance"].reshape(shape)
    return (t.value - mean) / np.sqrt(var + layer.epsilon) * gamma + beta


# --------------------------------------------------------------------------- plan
class _Plan:
    """Kept channels per group, carriers or bias maps, and each mixer's folded
    weights."""

    def __init__(self, analysis, fold="bias_map"):
        self.a = analysis
        groups = analysis.groups
        self.members = {}
        for key in analysis.tensors:
            self.members.setdefault(groups.find(key), []).append(key)
        self.kept = {}  # group root -> sorted kept channel indices
        self.carrier = {}  # (tensor key, id(layer)) -> carrier channel
        self.mapped = set()  # (tensor key, id(layer)): zero-padded, folded as a bias map
        exits_by_group = {}
        for key, layer in analysis.exits:
            exits_by_group.setdefault(groups.find(key), []).append((key, layer))
            spatial = analysis.tensors[key].shape[1:-1]
            if (fold == "bias_map" and not _uniform(layer) and spatial
                    and all(d is not None for d in spatial)):
                self.mapped.add((key, id(layer)))
        for root, keys in self.members.items():
            if root in groups.frozen:
                continue
            self._plan_group(root, keys, exits_by_group.get(root, []))

    def _input_weights(self, key, layer):
        """Mixer kernel viewed as ``(positions, channels, *rest)`` over its input."""
        t = self.a.tensors[key]
        kernel = np.asarray(to_numpy(layer.kernel), dtype=np.float64)
        if isinstance(layer, L.Dense):
            return kernel.reshape(t.positions, t.channels, kernel.shape[-1])
        return np.moveaxis(kernel, -2, 0)[None]  # (1, C, *k, out)

    def _plan_group(self, root, keys, exits):
        n = self.a.tensors[keys[0]].channels
        removable = np.ones(n, dtype=bool)
        ignored = {}
        for key, layer in exits:
            w = self._input_weights(key, layer)
            ign = ~np.moveaxis(w, 1, 0).reshape(n, -1).any(axis=1)
            ignored[(key, id(layer))] = ign
            removable &= ign | self.a.tensors[key].const_channels()
        if not removable.any():
            self.kept[root] = np.arange(n)
            return
        carriers = set()
        for key, layer in exits:
            if _uniform(layer) or (key, id(layer)) in self.mapped:
                continue
            t = self.a.tensors[key]
            value = t.value[0]
            ign = ignored[(key, id(layer))]
            need = removable & ~ign & (value != 0)
            need[list(carriers)] = False
            if not need.any():
                continue
            candidates = removable & t.const_channels() & (value != 0)
            in_use = [c for c in carriers if candidates[c]]
            pool = in_use or list(np.flatnonzero(candidates))
            k = max(pool, key=lambda c: abs(value[c]))
            carriers.add(int(k))
            self.carrier[(key, id(layer))] = int(k)
        removed = removable.copy()
        removed[list(carriers)] = False
        if removed.all():  # a layer needs at least one channel
            removed[0] = False
        self.kept[root] = np.flatnonzero(~removed)

    def kept_of(self, key):
        root = self.a.groups.find(key)
        return self.kept.get(root)  # None: every channel is kept

    # ---------------------------------------------------------------- weights
    def mixer_weights(self, layer, in_key, out_key):
        """New ``(kernel, bias, use_bias, bias_map)`` of a Conv/Dense layer;
        ``bias_map`` is ``None`` or the ``(*spatial_out, out)`` map to add after it."""
        kernel = np.asarray(to_numpy(layer.kernel), dtype=np.float64)
        bias = (
            np.asarray(to_numpy(layer.bias), dtype=np.float64)
            if layer.use_bias else np.zeros(kernel.shape[-1])
        )
        use_bias = layer.use_bias
        bias_map = None
        kept_in = self.kept_of(in_key)
        if kept_in is not None:
            t = self.a.tensors[in_key]
            w = self._input_weights(in_key, layer).copy()  # (P, C, ..., out)
            removed = np.setdiff1d(np.arange(t.channels), kept_in)
            const = t.const_channels()
            contrib = [c for c in removed if const[c]]
            k = self.carrier.get((in_key, id(layer)))
            if _uniform(layer):
                if contrib:  # v_c · Σ_{positions, taps} W[p, c, ..., o]  →  bias
                    vals = t.value[:, contrib]  # (P, n)
                    sums = w[:, contrib].reshape(t.positions, len(contrib), -1, w.shape[-1])
                    add = np.einsum("pn,pnto->o", vals, sums)
                else:
                    add = np.zeros_like(bias)
                if np.any(add != 0):
                    bias = bias + add
                    use_bias = True
            elif (in_key, id(layer)) in self.mapped:
                live = [c for c in contrib if t.value[0, c] != 0]
                if live:
                    taps = np.einsum("n,n...->...", t.value[0, live], w[0, live])
                    bias_map = _bias_map(layer, t.shape[1:-1], taps)
                    flat = bias_map.reshape(-1, bias_map.shape[-1])
                    scale = max(1.0, float(np.abs(flat).max()))
                    if np.abs(flat - flat[0]).max() <= 1e-12 * scale:  # uniform after all
                        if np.any(flat[0] != 0):
                            bias = bias + flat[0]
                            use_bias = True
                        bias_map = None
            else:
                for c in contrib:
                    v = t.value[0, c]
                    if v != 0 and c != k and w[0, c].any():
                        w[0, k] = w[0, k] + (v / t.value[0, k]) * w[0, c]
            w = w[:, kept_in]
            if isinstance(layer, L.Dense):
                kernel = w.reshape(-1, w.shape[-1])
            else:
                kernel = np.moveaxis(w[0], 0, -2)
        kept_out = self.kept_of(out_key)
        if kept_out is not None:
            kernel = kernel[..., kept_out]
            bias = bias[kept_out]
            if bias_map is not None:
                bias_map = bias_map[..., kept_out]
        return kernel, bias, use_bias, bias_map


# --------------------------------------------------------------------------- public
def channel_groups(model):
    """Conv/Dense layers whose output channels must be pruned together.

    Two layers are in one group when their outputs meet — through per-channel
    layers (BatchNorm, activations, pooling, depthwise convolutions) — in an
    ``Add`` (or another elementwise merge): the channels of a residual stream.
    :func:`shrink` can remove a channel of such a stream only when it is pruned in
    *every* layer writing to it, so filter-pruning a ResNet beyond the
    block-internal convolutions needs one channel mask per group. Pass the result
    to :func:`~tfcompress.pruning.prune_model` (``channel_groups=…``, or
    ``channel_groups="auto"`` to have it computed there), or use the names as the
    ``channel_group`` argument of :func:`~tfcompress.pruning.prune_layer`.

    Args:
        model: a flat functional or Sequential model, plain or wrapped.

    Returns:
        ``{layer name: group name}`` for every Conv/Dense layer sharing its output
        channels with another one (layers alone in their group are left out). The
        group name is ``"group_<first member>"`` in graph order.

    Raises:
        ValueError: if ``model`` is subclassed or contains nested models.

    Example:
        >>> channel_groups(models.resnet(depth=8))["stage1_block1_conv2"]
        'group_stem_conv'
    """
    if not isinstance(model, keras.Model) or not _is_cloneable(model):
        raise ValueError(
            "channel_groups supports functional and Sequential models; received: "
            f"model={model!r}"
        )
    view = functional_view(model)
    nested = [l.name for l in view.layers if isinstance(l, keras.Model)]
    if nested:
        raise ValueError(f"channel_groups supports flat models; {nested} are nested models.")
    analysis = _Analysis(view, constants=False)
    members = {}
    for layer, _, out_keys, kind in analysis.nodes:
        if kind == "mixer":
            members.setdefault(analysis.groups.find(out_keys[0]), []).append(layer.name)
    return {
        name: f"group_{names[0]}"
        for names in members.values() if len(names) > 1
        for name in names
    }


def _check_structured(model):
    wrappers = collect_wrappers(model)
    if not wrappers:
        return False
    bad = [f"{w.name} ({w.granularity.name})" for w in wrappers
           if not isinstance(w.granularity, Structured)]
    if bad:
        raise ValueError(
            "shrink needs structured (filter) masks: prune with "
            "granularity='structured'. These wrappers have other granularities: "
            f"{bad}."
        )
    return True


def shrink(model, check=True, fold="bias_map"):
    """Rebuilds ``model`` with its pruned filters physically removed (exact).

    ``model`` is either pruned with ``granularity="structured"`` (wrapped; the
    masks are baked in with :func:`strip` first) or a plain model whose pruned
    filters are all-zero kernel slices. Pruned output channels are removed from
    their Conv/Dense layer, from the per-channel layers after it (BatchNorm,
    activations, pooling, depthwise convolutions, residual ``Add`` groups) and
    from the input of every consuming Conv/Dense layer (through ``Flatten`` too).
    Constant outputs of removed channels (bias, BatchNorm's ``beta − mean·γ/σ``,
    after ReLU …) are folded into the consumers' biases; where a zero-padded
    convolution makes the contribution position-dependent, into a fixed
    per-position bias map added after that convolution by a
    :class:`~tfcompress.pruning.PositionBias` layer (``fold="bias_map"``), or into
    one kept *carrier* channel (``fold="carrier"``) — see the module docstring. The
    result computes the same function as ``strip(model)`` up to float rounding.

    Residual ``Add`` groups keep the union of the channels alive in any branch;
    prune with ``channel_groups="auto"`` so that all branches drop the same ones.

    Args:
        model: a flat functional or Sequential model (wrapped with structured
            masks, or stripped).
        check: passed to :func:`strip` (raise if masks are stale).
        fold: how the constants of removed channels reach a consumer convolution
            with spatial zero padding. ``"bias_map"`` (default): a
            :class:`~tfcompress.pruning.PositionBias` layer after the consumer adds
            the exact per-position contribution (the consumer's fused activation
            moves into it); needs the consumer's input spatial size to be static —
            consumers without one fall back to a carrier. ``"carrier"``: keep one
            removable channel per such tensor and fold the others into its input
            weights (exact for every input size, one extra channel). Both fold into
            the bias wherever the contribution is uniform (Dense, valid padding,
            1×1 kernels).

    Returns:
        A new plain functional model (also for a Sequential input) with fewer
        parameters and MACs (compare with :func:`~tfcompress.pruning.sparsity_report`).
        Kept channels keep their order; a group may keep a few pruned channels:
        those alive in another branch of a residual ``Add``, and (with
        ``fold="carrier"`` or a dynamic spatial size) at most one carrier per
        tensor read by a zero-padded convolution.

    Raises:
        ValueError: if ``fold`` is not ``"bias_map"`` or ``"carrier"``; if the
            model has wrappers with a non-structured granularity,
            has no structured sparsity at all (no all-zero output filter in any
            Conv/Dense layer), is subclassed, or contains nested models.

    Example:
        >>> pruned = prune_model(model, schedule=ConstantSparsity(0.5),
        ...                      granularity="structured")
        >>> # ... fit with UpdateMasks ...
        >>> small = shrink(pruned)
        >>> small.count_params() < strip(pruned).count_params()
        True
    """
    if fold not in _FOLDS:
        raise ValueError(f"fold must be one of {_FOLDS}; received: fold={fold!r}")
    if not isinstance(model, keras.Model) or not _is_cloneable(model):
        raise ValueError(
            "shrink supports functional and Sequential models; received: "
            f"model={model!r}"
        )
    wrapped = _check_structured(model)
    if wrapped:
        plain = strip(model, check=check)
    else:
        if any(isinstance(l, PruneWrapper) for l in model._flatten_layers()):
            raise ValueError("shrink: the model's PruneWrappers are not built yet.")
        plain, _ = clone_with(model, _fresh_copy)
    plain = functional_view(plain)
    nested = [l.name for l in plain.layers if isinstance(l, keras.Model)]
    if nested:
        raise ValueError(
            f"shrink supports flat models; {nested} are nested models. Rebuild the "
            "model without nesting first."
        )
    analysis = _Analysis(plain)
    dead_somewhere = any(
        kind == "mixer" and analysis.tensors[outs[0]].const.any()
        for _, _, outs, kind in analysis.nodes
    )
    if not wrapped and not dead_somewhere:
        raise ValueError(
            "shrink found no structured sparsity in the model: no Conv/Dense layer "
            "has an all-zero output filter. Prune it with "
            "prune_model(..., granularity='structured') (or dcil/dpf with "
            "granularity='structured') first."
        )
    plan = _Plan(analysis, fold)
    new_weights, new_config, bias_maps = {}, {}, {}
    for layer, in_keys, out_keys, kind in analysis.nodes:
        if kind == "mixer":
            kernel, bias, use_bias, bias_map = plan.mixer_weights(
                layer, in_keys[0], out_keys[0])
            config = layer.get_config()
            config["filters" if "filters" in config else "units"] = int(kernel.shape[-1])
            config["use_bias"] = bool(use_bias)
            if bias_map is not None:  # added before the activation: move it out
                bias_maps[id(layer)] = (bias_map, config.get("activation"))
                config["activation"] = "linear"
            new_config[id(layer)] = config
            new_weights[id(layer)] = [kernel, bias] if use_bias else [kernel]
        elif kind in ("depthwise", "bn"):
            kept = plan.kept_of(in_keys[0])
            if kept is None:
                continue
            t = analysis.tensors[in_keys[0]]
            sliced = []
            for v in layer.weights:
                arr = np.asarray(to_numpy(v))
                if kind == "depthwise" and v is layer.kernel:
                    sliced.append(arr[..., kept, :])
                else:
                    sliced.append(arr.reshape(t.positions, t.channels)[:, kept].reshape(-1))
            new_weights[id(layer)] = sliced

    pairs, originals, position_biases = {}, {}, []

    def clone_function(layer):
        config = new_config.get(id(layer))
        new = layer.__class__.from_config(config) if config else _fresh_copy(layer)
        pairs[id(layer)] = (layer, new)
        originals[id(new)] = id(layer)
        return new

    def call_function(layer, *args, **kwargs):
        out = layer(*args, **kwargs)
        entry = bias_maps.get(originals.get(id(layer)))
        if entry is None:
            return out
        bias_map, activation = entry
        added = PositionBias(bias_map.shape, activation=activation,
                             name=f"{layer.name}_position_bias")
        out = added(out)
        position_biases.append((added, bias_map))
        return out

    shrunk = clone_model(plain, clone_function=clone_function, call_function=call_function)
    for added, bias_map in position_biases:
        added.bias_map.assign(np.asarray(bias_map, dtype=added.bias_map.dtype))
    for key, (original, new) in pairs.items():
        if not new.weights:
            continue
        values = new_weights.get(key)
        if values is None:
            values = original.get_weights()
        new.set_weights([np.asarray(v, dtype=w.dtype) for v, w in zip(values, new.weights)])
    return shrunk
