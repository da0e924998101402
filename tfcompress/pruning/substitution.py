"""Run a layer with some of its variables replaced by tensors.

How the wrapper feeds the masked weight to the wrapped layer
------------------------------------------------------------
Keras 3 variables read their value through ``Variable.value``, which first asks the
active ``keras.StatelessScope`` for a substitute value — that is how the JAX trainer
runs a whole model on traced state (``stateless_call``). :class:`WeightSubstitution`
is a ``StatelessScope`` that maps a few variables (the kernel, the bias …) to
tensors computed from them (``w * m`` etc.) and passes everything else through to
the enclosing scope, if any. Inside it the wrapped layer's own ``call`` runs
unchanged: ``Dense`` reads ``self.kernel``, ``Conv2D`` passes ``self.kernel`` to
``ops.conv``, a user subclass with its own ``call`` reads whatever it reads — all of
them get the substituted tensor. Nothing on the layer is reassigned, so:

* it works for every layer, built-in or custom, with no per-class code;
* it is backend-independent (``keras.ops`` tensors on TF, tracers on JAX) and
  gradients flow through the substitute to the real variable (on TF the tape sees
  ``w * m`` computed from the variable; on JAX the substitute is computed from the
  traced state);
* it nests: inside the JAX trainer's own stateless scope the substitution chains to
  it (other variables, e.g. the bias, keep their traced values; assignments and
  losses go to the outer scope);
* without an enclosing scope (TF, eager JAX) variable assignments made by the
  wrapped layer are applied on exit and its losses (activity regularizers) are
  collected and handed to the wrapper, so nothing is dropped.

This relies on ``keras.src.backend.common.stateless_scope.get_stateless_scope``
(Keras 3.15 internals, covered by the tests).
"""

import keras
from keras.src.backend.common import global_state
from keras.src.backend.common.stateless_scope import get_stateless_scope


class WeightSubstitution(keras.StatelessScope):
    """A ``StatelessScope`` that substitutes a few variables and chains to its parent.

    Args:
        mapping: list of ``(variable, tensor)`` pairs.
    """

    def __init__(self, mapping):
        super().__init__(state_mapping=None, collect_losses=True, initialize_variables=False)
        for var, value in mapping:
            if tuple(var.shape) != tuple(value.shape):
                raise ValueError(
                    f"Substitute for {var.path} has shape {tuple(value.shape)}, "
                    f"expected {tuple(var.shape)}."
                )
            self.state_mapping[id(var)] = value
        self.parent = None
        self._deferred_updates = []

    def __enter__(self):
        self.parent = get_stateless_scope()
        if self.parent is not None:
            self.collect_losses = self.parent.collect_losses
            self.losses = self.parent.losses
        self.original_scope = self.parent
        global_state.set_global_attribute("stateless_scope", self)
        return self

    def get_current_value(self, variable):
        value = self.state_mapping.get(id(variable), None)
        if value is None and self.parent is not None:
            value = self.parent.get_current_value(variable)
        return value

    def add_update(self, update):
        variable, value = update
        self.state_mapping[id(variable)] = value
        if self.parent is not None:
            self.parent.add_update(update)
        else:
            self._deferred_updates.append(update)

    def add_loss(self, loss):
        if self.parent is not None:
            self.parent.add_loss(loss)
        else:
            self.losses.append(loss)

    def __exit__(self, *args, **kwargs):
        global_state.set_global_attribute("stateless_scope", self.original_scope)
        if self.parent is None:
            for variable, value in self._deferred_updates:
                variable.assign(value)
        self._deferred_updates = []

    @property
    def orphan_losses(self):
        """Losses collected with no enclosing scope; the caller re-adds them."""
        return [] if self.parent is not None else list(self.losses)
