"""The one place where mrcnn touches Keras internals (names without a
public API), each guarded: when a Keras release renames or drops one, the
public fallback is used and the reason is logged once (``logging`` warning
from ``mrcnn.keras_compat``), instead of an AttributeError deep in training.

=================================  ==========================  =====================
internal                           used for                    fallback
=================================  ==========================  =====================
``optimizer._get_variable_index``  the momentum slot of a      Keras' own SGD update
and ``variable.value.handle``      weight, for the fused       (same numbers, ~9
                                   ``ResourceApplyKerasMomen-  passes over each
                                   tum`` kernel                weight instead of 2)
                                   (``optimizers``)
``tensor._keras_history``          the layer that made each    ``model.output_names``
                                   output of the training
                                   model (its loss outputs)
``layer._call_has_training_arg``   whether TimeDistributed     ``inspect.signature``
                                   passes ``training=``        of ``layer.call``
=================================  ==========================  =====================

``pyproject.toml`` declares the Keras versions these were tested with
(tests/test_dependencies.py checks the installed ones and each fallback).
"""
import inspect
import logging
from typing import List, Optional

__all__ = ["momentum_slot_handle", "output_layer_names", "call_has_training_arg",
           "fallback_reasons"]

logger = logging.getLogger(__name__)

# The internal names (module attributes, so a test can play a Keras release
# that renamed one).
VARIABLE_INDEX = "_get_variable_index"
KERAS_HISTORY = "_keras_history"
CALL_HAS_TRAINING_ARG = "_call_has_training_arg"

# what fell back, and why (also logged once each)
_FALLBACKS = {}


def _fallback(key: str, reason: str) -> None:
    if key not in _FALLBACKS:
        _FALLBACKS[key] = reason
        logger.warning("Keras internals: %s", reason)


def fallback_reasons() -> dict:
    """{internal: reason} for every internal that was missing so far."""
    return dict(_FALLBACKS)


def momentum_slot_handle(optimizer, variable) -> Optional[object]:
    """The resource handle of ``variable``'s momentum buffer in a Keras SGD
    optimizer, or None (logged once) when this Keras does not expose it the
    way the fused kernel needs."""
    index_of = getattr(optimizer, VARIABLE_INDEX, None)
    if index_of is None:
        _fallback("optimizer._get_variable_index",
                  "keras.optimizers.Optimizer has no _get_variable_index in this Keras "
                  "version; ClippedMomentumSGD uses Keras' own SGD update (same results, "
                  "slower).")
        return None
    try:
        momentum = optimizer.momentums[index_of(variable)]
        return momentum.value.handle
    except (AttributeError, KeyError, IndexError, TypeError) as e:
        _fallback("variable.value.handle",
                  f"the momentum buffer's TensorFlow handle is not reachable in this Keras "
                  f"version ({type(e).__name__}: {e}); ClippedMomentumSGD uses Keras' own "
                  f"SGD update (same results, slower).")
        return None


def output_layer_names(model) -> List[str]:
    """The name of the layer that produces each output of a functional model."""
    try:
        return [getattr(t, KERAS_HISTORY).operation.name for t in model.outputs]
    except AttributeError as e:
        _fallback("tensor._keras_history",
                  f"KerasTensor._keras_history is gone in this Keras version ({e}); the "
                  f"training model's outputs are named by model.output_names.")
        return list(model.output_names)


def call_has_training_arg(layer) -> bool:
    """Whether ``layer.call`` takes a ``training`` argument."""
    value = getattr(layer, CALL_HAS_TRAINING_ARG, None)
    if isinstance(value, bool):
        return value
    _fallback("layer._call_has_training_arg",
              "Layer._call_has_training_arg is gone in this Keras version; whether a "
              "layer takes training= is read from the signature of its call().")
    try:
        parameters = inspect.signature(layer.call).parameters
    except (TypeError, ValueError):
        return False
    return "training" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
