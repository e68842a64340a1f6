"""A reusable layer check in the style of keras-hub's ``run_layer_test``.

``run_layer_test(cls, init_kwargs, inputs)`` checks the things every mrcnn
layer must do under Keras 3 and returns the eager outputs for value checks:

0. It has ``expected_num_weights`` weights.
1. ``get_config()`` survives a JSON round trip: ``from_config`` rebuilds a
   layer with the same config, and ``keras.saving`` (de)serializes it by its
   registered ``mrcnn>`` name.
2. Calling it on ``keras.Input`` tensors with batch size None gives output
   specs (shapes, ``None`` only where dynamic, dtypes) that match the eager
   outputs.
3. Batch size is not baked in: the same layer on the inputs duplicated to a
   batch of 2 gives, for each image, exactly the batch-of-1 result.
4. It works inside a ``keras.Model`` built on ``keras.Input(batch None)``,
   eagerly, through ``predict`` (``tf.function``), and after rebuilding the
   model from its JSON config.
"""
import copy
import json

import keras
import numpy as np


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _assert_spec_matches(symbolic, eager, where):
    symbolic, eager = _as_list(symbolic), _as_list(eager)
    assert len(symbolic) == len(eager), f"{where}: {len(symbolic)} symbolic vs {len(eager)} eager outputs"
    for i, (s, e) in enumerate(zip(symbolic, eager)):
        e = np.asarray(e)
        assert len(s.shape) == e.ndim, f"{where} output {i}: symbolic {s.shape} vs eager {e.shape}"
        for d, (sd, ed) in enumerate(zip(s.shape, e.shape)):
            assert sd is None or sd == ed, f"{where} output {i} axis {d}: symbolic {s.shape} vs eager {e.shape}"
        assert keras.backend.standardize_dtype(s.dtype) == keras.backend.standardize_dtype(e.dtype), (
            f"{where} output {i}: symbolic dtype {s.dtype} vs eager {e.dtype}"
        )


def _to_numpy(outputs):
    return [np.asarray(o) for o in _as_list(outputs)]


def run_layer_test(layer_cls, init_kwargs, inputs, atol=0.0, expected_num_weights=0,
                   batch_axis=True, set_weights=None):
    """Runs the standard layer checks; returns the eager outputs (list of NumPy).

    layer_cls: the layer class.
    init_kwargs: dict of plain constructor arguments.
    inputs: list of NumPy arrays, each with a leading batch axis of size 1
        (the batch-of-2 check duplicates them).
    atol: tolerance for "batch of 2 equals batch of 1" and model-vs-layer
        comparisons (0 = bit-identical).
    expected_num_weights: number of weights after the first call (most
        mrcnn custom layers are weightless).
    batch_axis: False for a layer whose output has no batch axis (a scalar
        loss): the batch-of-2 check then compares whole outputs.
    set_weights: optional list of arrays given to the layer after it is
        built (so the eager outputs can be checked by hand).
    """
    inputs = [np.asarray(x) for x in inputs]

    # 1. Config round trip through JSON and keras.saving.
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    config_json = json.loads(json.dumps(config))
    # a copy: Keras' Wrapper.from_config pops 'layer' from the dict it gets
    rebuilt = layer_cls.from_config(copy.deepcopy(config_json))
    assert json.loads(json.dumps(rebuilt.get_config())) == config_json
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    assert serialized["registered_name"] == f"mrcnn>{layer_cls.__name__}"
    deserialized = keras.saving.deserialize_keras_object(serialized)
    assert type(deserialized) is layer_cls
    assert json.loads(json.dumps(deserialized.get_config())) == config_json

    # 2. Symbolic call (batch None) vs eager call.
    symbolic_inputs = [keras.Input(shape=x.shape[1:], dtype=str(x.dtype)) for x in inputs]

    def one_or_list(values):
        # a layer of one input takes it alone, as Keras' own layers want
        return values[0] if len(values) == 1 else values

    symbolic_out = layer(one_or_list(symbolic_inputs))
    if batch_axis:
        for s in _as_list(symbolic_out):
            assert s.shape[0] is None, f"batch size baked into output spec {s.shape}"
    if set_weights is not None:
        layer.set_weights(set_weights)
    eager_out = _to_numpy(layer(one_or_list(inputs)))
    assert len(layer.weights) == expected_num_weights, f"{len(layer.weights)} weights, expected {expected_num_weights}"
    _assert_spec_matches(symbolic_out, eager_out, f"{layer_cls.__name__} symbolic vs eager")

    # 3. Batch of 2 (the same image twice) gives the batch-of-1 result per image.
    doubled = [np.concatenate([x, x], axis=0) for x in inputs]
    out2 = _to_numpy(layer(one_or_list(doubled)))
    _assert_spec_matches(symbolic_out, out2, f"{layer_cls.__name__} batch 2")
    for o1, o2 in zip(eager_out, out2):
        if not batch_axis:
            np.testing.assert_allclose(o2, o1, rtol=0, atol=atol)
            continue
        assert o2.shape[0] == 2
        np.testing.assert_allclose(o2[0], o1[0], rtol=0, atol=atol)
        np.testing.assert_allclose(o2[1], o1[0], rtol=0, atol=atol)

    # 4. Inside a functional model: eager, predict (tf.function), rebuilt from JSON.
    model = keras.Model(one_or_list(symbolic_inputs), symbolic_out)
    runs = [("model eager", model(one_or_list(inputs)))]
    if batch_axis:  # predict() concatenates the batches along axis 0
        runs.append(("model predict", model.predict(one_or_list(doubled), verbose=0,
                                                    batch_size=2)))
    for name, out in runs:
        out = _to_numpy(out)
        for o_model, o_layer in zip(out, eager_out):
            o_model = o_model[:1] if batch_axis else o_model
            np.testing.assert_allclose(o_model, o_layer, rtol=0, atol=atol, err_msg=name)
    model_json = model.to_json()
    rebuilt_model = keras.models.model_from_json(model_json)
    rebuilt_model.set_weights(model.get_weights())
    for o_model, o_layer in zip(_to_numpy(rebuilt_model(one_or_list(inputs))), eager_out):
        np.testing.assert_allclose(o_model, o_layer, rtol=0, atol=atol, err_msg="model from JSON")
    return eager_out
