"""``clone_model``: ``keras.models.clone_model`` that survives a compile config which
does not rebuild.

Keras recompiles a clone of a compiled model from the original's compile config inside
the cloning; a config that does not deserialize (e.g. a PSG optimizer holding a
``mask_fn`` closure, refused in safe mode) would make every clone of that model fail —
stripping, quantizing or converting it included. Here the clone is made with the
compiled state hidden and compiled afterwards where the config rebuilds; otherwise it
is returned uncompiled, with a warning saying why.
"""

import contextlib
import warnings

import keras


@contextlib.contextmanager
def _hidden_compiled_state(model):
    compiled = getattr(model, "compiled", False)
    model.compiled = False
    try:
        yield compiled
    finally:
        model.compiled = compiled


def clone_model(model, **kwargs):
    """``keras.models.clone_model(model, **kwargs)``, compiled like ``model`` where its
    compile config rebuilds (see the module docstring)."""
    with _hidden_compiled_state(model) as compiled:
        clone = keras.models.clone_model(model, **kwargs)
    if compiled:
        try:
            clone.compile_from_config(model.get_compile_config())
        except (ValueError, TypeError) as error:
            warnings.warn(
                f"The clone of model {model.name!r} is returned uncompiled: its compile "
                f"config could not be rebuilt ({type(error).__name__}: "
                f"{str(error)[:200]}). Compile it before fit/evaluate.", stacklevel=4)
    return clone
