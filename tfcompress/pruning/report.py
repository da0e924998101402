"""``sparsity_report``: per-layer and global sparsity, parameters, nonzeros and MACs."""

import keras
import numpy as np

from tfcompress.pruning._utils import to_numpy
from tfcompress.pruning import controller
from tfcompress.pruning import registry
from tfcompress.pruning.wrapper import PruneWrapper


class SparsityReport(dict):
    """A dict (``layers``, ``global``, ``total_params``, ``stale``, ``table``) whose
    ``str()`` is the pretty table."""

    def __str__(self):
        return self["table"]


def _spatial(shape, layer, skip_batch=True):
    shape = tuple(shape)[1:] if skip_batch else tuple(shape)
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return shape[1:]
    return shape[:-1]


def _positions(layer, spec):
    if spec.positions == "none":
        return 0
    try:
        build = layer.get_build_config() or {}
        in_shape = build.get("input_shape")
        if in_shape is None:
            return 1
        shape = in_shape
        if spec.positions == "output":
            shape = layer.compute_output_shape(in_shape)
        if isinstance(layer, keras.layers.Dense):
            dims = tuple(shape)[1:-1]
        else:
            dims = _spatial(shape, layer)
        if any(d is None for d in dims):
            return 1
        return int(np.prod(dims)) if dims else 1
    except Exception:  # unusual custom layer: count each weight once
        return 1


def _row(name, layer, kind, granularity, mode, params, nonzeros, pruned, macs, nz_macs):
    return {
        "name": name,
        "class": type(layer).__name__,
        "kind": kind,
        "granularity": granularity,
        "mode": mode,
        "params": int(params),
        "nonzeros": int(nonzeros),
        "sparsity": (pruned / params) if params else 0.0,
        "macs": int(macs),
        "nonzero_macs": int(nz_macs),
    }


def _fmt_int(n):
    return f"{n:,}"


def _table(rows, glob, total):
    headers = ["layer", "type", "granularity", "params", "nonzeros", "sparsity", "MACs", "nz MACs"]
    body = [
        [
            r["name"],
            r["class"],
            r["granularity"] or "-",
            _fmt_int(r["params"]),
            _fmt_int(r["nonzeros"]),
            f"{100 * r['sparsity']:.2f}%",
            _fmt_int(r["macs"]),
            _fmt_int(r["nonzero_macs"]),
        ]
        for r in rows
    ]
    body.append(
        [
            "TOTAL (prunable)",
            "",
            "",
            _fmt_int(glob["params"]),
            _fmt_int(glob["nonzeros"]),
            f"{100 * glob['sparsity']:.2f}%",
            _fmt_int(glob["macs"]),
            _fmt_int(glob["nonzero_macs"]),
        ]
    )
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *body)]
    line = "-+-".join("-" * w for w in widths)

    def fmt(cells):
        return " | ".join(
            str(c).ljust(w) if i < 3 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        )

    out = [fmt(headers), line] + [fmt(b) for b in body[:-1]] + [line, fmt(body[-1])]
    out.append(f"total parameters (all weights): {_fmt_int(total)}")
    return "\n".join(out)


def sparsity_report(model):
    """Sparsity of every prunable layer of a model, pruned (wrapped) or plain.

    For a :class:`PruneWrapper` the sparsity is the fraction of masked-out entries;
    for a plain supported layer (e.g. after :func:`strip`) the fraction of exact
    zeros. MACs are multiply-accumulates per example (Dense: ``in·out`` per input
    position; convolutions: kernel size per output position; Embedding: 0);
    ``nonzero_macs`` counts only nonzero weights.

    Args:
        model: a model (any kind) or a layer.

    Returns:
        A :class:`SparsityReport` dict: ``layers`` (list of per-layer dicts with
        ``name, class, granularity, mode, params, nonzeros, sparsity, macs,
        nonzero_macs``), ``global`` (the same totals over all prunable weights),
        ``total_params``, ``stale`` (names of wrappers trained without mask
        updates) and ``table`` (a pretty string; also ``str(report)``).
    """
    controller.sync_state(model)
    if isinstance(model, keras.Model):
        layers = model._flatten_layers(include_self=False, recursive=True)
    else:
        layers = [model]
    rows, seen = [], set()
    for layer in layers:
        if id(layer) in seen or isinstance(layer, keras.Model) or not layer.built:
            continue
        seen.add(id(layer))
        if isinstance(layer, PruneWrapper):
            inner = layer.layer
            seen.add(id(inner))
            masks = layer.full_masks()
            values = dict(zip([id(v) for v in inner.weights], layer.pruned_weights()))
            params = nonzeros = pruned = macs = nz_macs = 0
            for name, var, spec, _ in layer.targets:
                m = masks[name]
                nnz = int(np.count_nonzero(values[id(var)]))
                pos = _positions(inner, spec)
                params += m.size
                pruned += int((m == 0).sum())
                nonzeros += nnz
                macs += m.size * pos
                nz_macs += nnz * pos
            rows.append(
                _row(layer.name, inner, "pruned", layer.granularity.name, layer.mode,
                     params, nonzeros, pruned, macs, nz_macs)
            )
        elif registry.supports(layer):
            try:
                entries, _ = registry.prunable_weights(layer)
            except ValueError:
                continue
            params = nonzeros = macs = nz_macs = 0
            for _, var, spec in entries:
                w = to_numpy(var)
                nnz = int(np.count_nonzero(w))
                pos = _positions(layer, spec)
                params += w.size
                nonzeros += nnz
                macs += w.size * pos
                nz_macs += nnz * pos
            rows.append(
                _row(layer.name, layer, "plain", None, None, params, nonzeros,
                     params - nonzeros, macs, nz_macs)
            )
    keys = ("params", "nonzeros", "macs", "nonzero_macs")
    glob = {k: sum(r[k] for r in rows) for k in keys}
    pruned_total = sum(round(r["sparsity"] * r["params"]) for r in rows)
    glob["sparsity"] = pruned_total / glob["params"] if glob["params"] else 0.0
    total = int(model.count_params()) if model.built else glob["params"]
    stale = [w.name for w, _, _ in controller.stale_wrappers(model, sync=False)] if isinstance(
        model, (keras.Model, PruneWrapper)
    ) else []
    report = SparsityReport(layers=rows, **{"global": glob}, total_params=total, stale=stale)
    table = _table(rows, glob, total)
    if stale:
        table += "\nWARNING: " + controller.stale_message(
            controller.stale_wrappers(model, sync=False)
        )
    report["table"] = table
    return report
