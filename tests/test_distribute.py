"""Data-parallel training (mrcnn/distribute.py) on CPU.

MirroredStrategy runs over two logical CPU devices, configured when this
module is imported (``tf.config.set_logical_device_configuration`` must come
before TensorFlow initializes its devices; the tests that need them skip,
saying so, when another module initialized TensorFlow first). The model is
the tiny shapes config of tests/distribute_helpers.py.

Equality tolerances: float32 round-off differs between a convolution over 4
images and two over 2, and between one sum of gradients and a sum of two
partial sums. Each weight ``w`` is compared with
``atol = ATOL + RTOL_UPDATE * max|w1 - w0|`` (``w1 - w0``: its update on one
device): ATOL = 1e-5 (weights are ~0.01-0.1; measured differences after one
step are up to 1.5e-6), RTOL_UPDATE = 1e-3; the two-process test (2 steps)
uses 1e-2.
"""
import functools
import json
import logging
import os
import socket
import subprocess
import sys
import time
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from mrcnn import distribute, distribute_data, training
from tests import distribute_helpers as H

try:
    # (list_logical_devices would initialize TensorFlow: configure first.)
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:  # TensorFlow already initialized by another test module
    pass
LOGICAL_CPUS = len(tf.config.list_logical_devices("CPU"))

needs_two = pytest.mark.skipif(
    LOGICAL_CPUS < 2, reason="two logical CPU devices are needed and TensorFlow was "
    "initialized before this module could configure them; run this file on its own")

RTOL_UPDATE = 1e-3
ATOL = 1e-5


@functools.lru_cache(maxsize=None)
def mirrored():
    """THE MirroredStrategy of this module. One per process: on CPUs it
    all-reduces with collective ops, and a second MirroredStrategy over the
    same devices numbers its collective instances from the same start, so
    its first all-reduce meets an earlier one of another shape ("Shape
    mismatch in the collective instance 100") and aborts every collective
    of the process."""
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


# ---------------------------------------------------------------------------
# Strategy resolution
# ---------------------------------------------------------------------------

def test_gpu_count_above_the_visible_gpus_is_a_clear_error(tmp_path):
    from mrcnn import model as modellib
    assert not tf.config.list_logical_devices("GPU")
    config = H.make_config(GPU_COUNT=2)
    assert config.BATCH_SIZE == 4
    with pytest.raises(ValueError, match=r"GPU_COUNT is 2 but 0 GPUs are visible.*"
                                         r"Set GPU_COUNT = 1"):
        modellib.MaskRCNN("training", config, str(tmp_path))
    # One GPU asked, or inference: no strategy, the single-device path.
    assert distribute.resolve_strategy(H.make_config()) is None
    with pytest.raises(TypeError, match="tf.distribute.Strategy"):
        distribute.resolve_strategy(H.make_config(), strategy="mirrored")


@needs_two
def test_strategy_from_argument_or_scope_and_the_global_batch():
    strategy = mirrored()
    config = H.make_config(IMAGES_PER_GPU=3)
    assert distribute.resolve_strategy(config, strategy) is strategy
    with strategy.scope():
        assert distribute.resolve_strategy(config) is strategy
    assert distribute.resolve_strategy(config) is None
    # IMAGES_PER_GPU per replica: 3 * 2 replicas.
    assert distribute.global_batch_size(config, strategy) == 6
    assert distribute.global_batch_size(config, None) == config.BATCH_SIZE == 3
    assert distribute.is_chief(strategy) and distribute.num_workers(strategy) == 1
    assert distribute.worker_index(strategy) == 0


def _fake_cluster(task_type, task_id, spec):
    resolver = types.SimpleNamespace(
        task_type=task_type, task_id=task_id,
        cluster_spec=lambda: tf.train.ClusterSpec(spec))
    workers = sum(len(spec.get(t, [])) for t in ("chief", "worker"))
    return types.SimpleNamespace(cluster_resolver=resolver,
                                 extended=types.SimpleNamespace(_num_workers=workers))


def test_chief_and_worker_index_in_a_cluster():
    two = {"worker": ["h0:1", "h1:1"]}
    assert distribute.is_chief(_fake_cluster("worker", 0, two))
    assert not distribute.is_chief(_fake_cluster("worker", 1, two))
    assert distribute.worker_index(_fake_cluster("worker", 1, two)) == 1
    with_chief = {"chief": ["c:1"], "worker": ["h0:1", "h1:1"]}
    assert distribute.is_chief(_fake_cluster("chief", 0, with_chief))
    assert not distribute.is_chief(_fake_cluster("worker", 0, with_chief))
    assert distribute.worker_index(_fake_cluster("worker", 0, with_chief)) == 1
    assert distribute.num_workers(_fake_cluster("worker", 0, with_chief)) == 3
    assert json.loads(distribute_data.tf_config_example(["a:1", "b:2"], 1)) == {
        "cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}


def test_sharded_sequence_rows_are_the_one_process_rows():
    """Worker w of W loads rows w*b..(w+1)*b of each global batch of the
    one-process DataSequence with the same seed (every epoch)."""
    config = H.make_config(IMAGES_PER_GPU=4)
    ds = H.shapes(10, seed=4)
    whole = training.DataSequence(ds, config, steps=3, batch_size=4, seed=5)

    def ids(batch):
        return batch["input_image_meta"][:, 0].astype(int).tolist()

    shards = [distribute_data.ShardedDataSequence(ds, config, steps=3, batch_size=4, seed=5,
                                             shard=w, num_shards=2) for w in range(2)]
    for k in range(6):  # stream batch k = epoch k // 3, index k % 3
        whole.epoch = k // 3
        expected = ids(whole[k % 3][0])
        assert ids(shards[0][k][0]) + ids(shards[1][k][0]) == expected
    assert len(set(ids(whole[0][0]))) == 4
    with pytest.raises(ValueError, match="does not divide among 3 workers"):
        distribute_data.ShardedDataSequence(ds, config, batch_size=4, shard=0, num_shards=3)


# ---------------------------------------------------------------------------
# The pieces of the train step
# ---------------------------------------------------------------------------

def _loss_inputs(rng, B=4, A=40, R=6, K=4):
    """Inputs of the five LossOutput layers for B images whose term counts
    differ from image to image."""
    match = rng.choice([-1, 0, 1], size=(B, A, 1), p=[0.5, 0.3, 0.2]).astype(np.int32)
    match[0, :, 0] = np.where(match[0, :, 0] == 1, -1, match[0, :, 0])  # image 0: no positive
    class_ids = np.zeros((B, R), np.int32)
    class_ids[1, :3] = [1, 2, 3]
    class_ids[2, :1] = [2]
    f = lambda *s: rng.normal(size=s).astype(np.float32)  # noqa: E731
    active = np.ones((B, K), np.float32)
    active[3, 2:] = 0
    return {
        "rpn_class_loss": [match, f(B, A, 2)],
        "rpn_bbox_loss": [f(B, 8, 4), match, f(B, A, 4)],
        "mrcnn_class_loss": [class_ids, f(B, R, K), active],
        "mrcnn_bbox_loss": [f(B, R, 4), class_ids, f(B, R, K, 4)],
        "mrcnn_mask_loss": [(f(B, R, 5, 5) > 0).astype(np.float32), class_ids,
                            1 / (1 + np.exp(-f(B, R, 5, 5, K)))],
    }


@needs_two
def test_losses_are_normalized_over_the_global_batch():
    """Mean over 2 replicas of the globally normalized replica losses = the
    loss of the 4-image batch; the naive mean of replica means is not."""
    from mrcnn import losses as L
    strategy = mirrored()
    inputs = _loss_inputs(np.random.default_rng(0))
    for name, args in inputs.items():
        fn = getattr(L, name + "_graph")
        whole = float(fn(*args))

        def replica(ctx, args=args):
            r = ctx.replica_id_in_sync_group
            return [a[2 * r:2 * r + 2] for a in args]

        parts = strategy.experimental_distribute_values_from_function(replica)

        def step(part, name=name, fn=fn):
            loss = tf.reshape(tf.cast(fn(*part), tf.float32), [])
            return distribute.globally_normalized(name, loss, part), loss

        normalized, plain = strategy.run(tf.function(step), args=(parts,))
        got = np.mean([float(v) for v in strategy.experimental_local_results(normalized)])
        naive = np.mean([float(v) for v in strategy.experimental_local_results(plain)])
        np.testing.assert_allclose(got, whole, rtol=1e-5, err_msg=name)
        assert abs(naive - whole) > 1e-3 * abs(whole), (name, naive, whole)
        # The counts are the loss's own denominators.
        assert float(distribute.loss_count(name, args)) > 0


@needs_two
@pytest.mark.parametrize("cls", ["ClippedMomentumSGD", "KerasPathClippedSGD"])
def test_clipped_sgd_under_mirrored_strategy_is_the_one_device_update(cls):
    """The fused update (and the unfused fallback) under MirroredStrategy:
    3 steps of per-replica gradients give Keras' SGD(momentum, clipnorm)
    applied on one device to their sum, on both replicas (one gradient is
    clipped); Keras' own clipnorm under the strategy does not (it clips each
    replica's part before the all-reduce)."""
    optimizer_class = getattr(training, cls, None) or getattr(distribute, cls)
    rng = np.random.default_rng(0)
    init = [rng.normal(size=(3, 4)).astype("f4"), rng.normal(size=(5,)).astype("f4")]
    grads = [[[rng.normal(size=w.shape).astype("f4") * s for w, s in zip(init, (4.0, 0.1))]
              for _ in range(2)] for _ in range(3)]
    assert np.linalg.norm(grads[0][0][0] + grads[0][1][0]) > 5.0

    def run_mirrored(make):
        strategy = mirrored()
        with strategy.scope():
            variables = [keras.Variable(w) for w in init]
            opt = make()
            opt.build(variables)

        @tf.function
        def step(g0, g1):
            def fn(a, b):
                rid = tf.distribute.get_replica_context().replica_id_in_sync_group
                opt.apply([tf.where(rid == 0, x, y) for x, y in zip(a, b)], variables)
            strategy.run(fn, args=(g0, g1))

        for s in grads:
            step([tf.constant(g) for g in s[0]], [tf.constant(g) for g in s[1]])
        return [H.replica_values(v) for v in variables]

    reference = [keras.Variable(w) for w in init]
    sgd = keras.optimizers.SGD(0.1, momentum=0.9, clipnorm=5.0)
    for s in grads:
        sgd.apply([tf.constant(a + b) for a, b in zip(*s)], reference)

    ours = run_mirrored(lambda: optimizer_class(0.1, 0.9, clip_norm=5.0))
    for replicas, ref, w0 in zip(ours, reference, init):
        assert len(replicas) == 2
        for value in replicas:
            np.testing.assert_allclose(value, ref.numpy(), rtol=1e-6, atol=1e-6)
        assert not np.allclose(replicas[0], w0)
    keras_clip = run_mirrored(lambda: keras.optimizers.SGD(0.1, momentum=0.9, clipnorm=5.0))
    assert not np.allclose(keras_clip[0][0], reference[0].numpy(), atol=1e-3)


@needs_two
def test_the_fused_update_only_under_tested_strategies(caplog):
    assert distribute.fused_optimizer_supported(None)[0]
    assert distribute.fused_optimizer_supported(mirrored())[0]
    central = tf.distribute.experimental.CentralStorageStrategy()
    ok, reason = distribute.fused_optimizer_supported(central)
    assert not ok and "CentralStorageStrategy" in reason
    model = types.SimpleNamespace(_distribute_strategy=central)
    with caplog.at_level(logging.WARNING, logger="mrcnn"):
        with central.scope():
            opt = distribute.make_optimizer(model, 0.01, 0.9, 5.0)
    assert type(opt) is distribute.KerasPathClippedSGD
    assert any("Fused SGD update disabled" in r.getMessage() for r in caplog.records)
    model = types.SimpleNamespace(_distribute_strategy=None)
    assert type(distribute.make_optimizer(model, 0.01, 0.9, 5.0)) is training.ClippedMomentumSGD


@needs_two
def test_loss_scale_skips_the_step_on_every_replica_when_one_overflows():
    """Replica 1's gradient overflows, replica 0's does not. With
    agree_on_nonfinite both replicas skip: weights unchanged, loss scale
    halved. Without it, LossScaleOptimizer takes replica 0's "finite" and
    applies the all-reduced inf."""
    def run(agree):
        strategy = mirrored()
        with strategy.scope():
            v = keras.Variable(np.ones(3, np.float32))
            opt = keras.optimizers.LossScaleOptimizer(
                keras.optimizers.SGD(0.1), initial_scale=8.0)
            opt.build([v])

        @tf.function
        def step():
            def fn():
                rid = tf.distribute.get_replica_context().replica_id_in_sync_group
                g = tf.where(rid == 1, tf.constant([np.inf, 1.0, 1.0]), tf.ones(3))
                grads = [g]
                if agree:
                    grads = distribute.agree_on_nonfinite(opt, grads)
                opt.apply(grads, [v])
            strategy.run(fn)

        step()
        return H.replica_values(v), float(keras.ops.convert_to_numpy(opt.dynamic_scale))

    values, scale = run(agree=True)
    assert scale == 4.0
    for value in values:
        np.testing.assert_array_equal(value, np.ones(3))
    values, scale = run(agree=False)
    assert not np.all(np.isfinite(values[0]))


# ---------------------------------------------------------------------------
# One step under MirroredStrategy = the one-device step
# ---------------------------------------------------------------------------

def _train_steps(config, batches, init, strategy=None, layers="all"):
    from mrcnn import model as modellib
    model = modellib.MaskRCNN("training", config, "unused", strategy=strategy)
    model.keras_model.set_weights(init)
    training.set_trainable(model.keras_model, layers, verbose=0)
    training.compile_model(model.keras_model, config.LEARNING_RATE, 0.9, 5.0)
    history = model.keras_model.fit(H.Batches(batches), epochs=1, verbose=0, shuffle=False)
    return model, history.history


@needs_two
@pytest.mark.parametrize("train_bn", [False, True])
def test_mirrored_step_equals_the_single_device_step(train_bn):
    """From the same weights and the same global batch of 4: one device
    (IMAGES_PER_GPU 4) and MirroredStrategy over 2 CPUs (IMAGES_PER_GPU 2)
    end one step with the same weights on both replicas and report the same
    losses.

    TRAIN_BN True: batch statistics, synchronized across the replicas
    (SYNC_BATCH_NORM), so they are the 4-image statistics; the moving
    averages agree too. TRAIN_BN False: frozen BatchNorm (the default).

    One step: from random weights, later steps amplify the round-off
    differences through ReLU kinks and (TRAIN_BN) near-zero batch variances
    (measured: after 3 steps one rpn_conv_shared channel off by 5e-4, 1% of
    its update, or 5% in the stem with batch statistics), which is chaos,
    not a distribution error. The two-process test trains 2 steps.
    """
    from mrcnn import model as modellib
    one_config = H.make_config(IMAGES_PER_GPU=4, TRAIN_BN=train_bn, **H.EXACT)
    two_config = H.make_config(IMAGES_PER_GPU=2, TRAIN_BN=train_bn, **H.EXACT)
    with H.deterministic_targets():
        batches = H.fixed_batches(one_config, 1, 4)
        keras.utils.set_random_seed(1)
        init = modellib.MaskRCNN("training", one_config, "unused").keras_model.get_weights()
        one, one_history = _train_steps(one_config, batches, init)
        strategy = mirrored()
        two, two_history = _train_steps(two_config, batches, init, strategy)

    assert two_history.keys() == one_history.keys()
    for name in one_history:
        np.testing.assert_allclose(two_history[name], one_history[name], rtol=1e-4, atol=1e-5,
                                   err_msg=name)
    rtol = RTOL_UPDATE
    moved = 0
    for w, w1, w0 in zip(two.keras_model.weights, one.keras_model.get_weights(), init):
        update = np.abs(w1 - w0).max()
        moved = max(moved, update)
        replicas = H.replica_values(w)
        assert len(replicas) == 2, w.path
        for value in replicas:
            np.testing.assert_allclose(value, w1, rtol=0, atol=ATOL + rtol * update,
                                       err_msg=w.path)
    assert moved > 1e-2
    if train_bn:
        bn = two.keras_model.get_layer("tiny_bn1")
        assert bn.synchronized
        assert not np.allclose(bn.moving_mean.numpy(), 0.0)  # it did update


@needs_two
def test_per_replica_batch_statistics_without_sync_batch_norm():
    """SYNC_BATCH_NORM False: each replica normalizes with its own images'
    statistics and keeps its own moving averages (they differ between the
    replicas); the trained weights still agree (gradients are summed)."""
    from mrcnn import model as modellib
    config = H.make_config(IMAGES_PER_GPU=2, TRAIN_BN=True, SYNC_BATCH_NORM=False, **H.EXACT)
    with H.deterministic_targets():
        batches = H.fixed_batches(config, 1, 4)
        keras.utils.set_random_seed(1)
        init = modellib.MaskRCNN("training", config, "unused").keras_model.get_weights()
        model, _ = _train_steps(config, batches, init, mirrored())
    bn = model.keras_model.get_layer("tiny_bn1")
    assert not bn.synchronized
    mean0, mean1 = H.replica_values(bn.moving_mean)
    assert not np.allclose(mean0, mean1)
    kernel0, kernel1 = H.replica_values(model.keras_model.get_layer("tiny_conv1").kernel)
    np.testing.assert_array_equal(kernel0, kernel1)


# ---------------------------------------------------------------------------
# train() under a strategy
# ---------------------------------------------------------------------------

@needs_two
def test_train_under_mirrored_strategy_checkpoints_and_resumes(tmp_path):
    """MaskRCNN(..., strategy=) then train(): global batch 4, validation,
    one checkpoint per epoch, find_last() + load_weights resume at epoch 2
    on the same strategy; the RPN's own proposals as ROIs."""
    from mrcnn import model as modellib
    config = H.make_config(IMAGES_PER_GPU=2)
    strategy = mirrored()
    model = modellib.MaskRCNN("training", config, str(tmp_path), strategy=strategy)
    assert model.strategy is strategy
    assert model.keras_model.distribute_strategy is strategy
    train_ds, val_ds = H.shapes(8, seed=1), H.shapes(4, seed=2)
    history = model.train(train_ds, val_ds, learning_rate=0.01, epochs=1, layers="heads",
                          verbose=0, seed=0)
    assert history.epoch == [0] and model.epoch == 1
    for name in ("loss", "rpn_class_loss", "mrcnn_mask_loss", "val_loss"):
        assert np.all(np.isfinite(history.history[name])) and history.history[name][0] >= 0
    first = os.path.join(model.log_dir, "mask_rcnn_tinyshapes_0001.h5")
    assert os.path.isfile(first)
    assert model.find_last() == first

    model.load_weights(model.find_last(), by_name=True)
    assert model.epoch == 1
    history = model.train(train_ds, None, learning_rate=0.005, epochs=2, layers="heads",
                          verbose=0, seed=0)
    assert history.epoch == [1] and model.epoch == 2
    assert model.find_last().endswith("mask_rcnn_tinyshapes_0002.h5")
    # The checkpoint holds the (mirrored) weights of the model.
    from mrcnn import weights
    other = modellib.MaskRCNN("training", config, str(tmp_path / "other"))
    weights.load_weights(other.keras_model, model.find_last(), by_name=True)
    np.testing.assert_array_equal(
        other.keras_model.get_layer("mrcnn_class_logits").get_weights()[0],
        model.keras_model.get_layer("mrcnn_class_logits").get_weights()[0])


# ---------------------------------------------------------------------------
# MultiWorkerMirroredStrategy: two processes on loopback
# ---------------------------------------------------------------------------

def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_two_processes_match_one_process(tmp_path):
    """Two worker processes (TF_CONFIG, MultiWorkerMirroredStrategy on
    127.0.0.1, IMAGES_PER_GPU 1 each) train 2 steps of the tiny shapes config
    with train() to the weights one process gets with IMAGES_PER_GPU 2 from
    the same initial weights and data seed, and report the same training and
    validation losses; only the chief (worker 0) writes
    a checkpoint (and TensorBoard logs); worker 1 writes nothing; without a
    seed both workers use the chief's."""
    from mrcnn import model as modellib
    config = H.make_config(IMAGES_PER_GPU=2, **H.EXACT)
    keras.utils.set_random_seed(3)
    reference = modellib.MaskRCNN("training", config, str(tmp_path / "reference"))
    init_path = str(tmp_path / "init.h5")
    reference.save_weights(init_path)
    init = {w.path: keras.ops.convert_to_numpy(w) for w in reference.keras_model.weights}

    hosts = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    procs = []
    for i in range(2):
        env = dict(os.environ, TF_CONFIG=distribute_data.tf_config_example(hosts, i),
                   TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
        log = open(tmp_path / f"worker{i}.log", "w")
        procs.append((subprocess.Popen(
            [sys.executable, "-m", "tests.mwms_worker", "--init", init_path,
             "--model-dir", str(tmp_path / f"worker{i}"), "--out",
             str(tmp_path / f"worker{i}.npz"), "--timeout", "180"],
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    try:
        with H.deterministic_targets():
            history = reference.train(H.shapes(8, seed=1), H.shapes(4, seed=2),
                                      learning_rate=config.LEARNING_RATE, epochs=1,
                                      layers="all", verbose=0, seed=0, workers=1)
        deadline = time.time() + 400
        for proc, log in procs:
            proc.wait(timeout=max(1.0, deadline - time.time()))
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    for i, (proc, _) in enumerate(procs):
        assert proc.returncode == 0, (tmp_path / f"worker{i}.log").read_text()[-3000:]

    expected = {w.path: keras.ops.convert_to_numpy(w) for w in reference.keras_model.weights}
    seeds = [int(np.load(tmp_path / f"worker{i}.npz")["shared_seed"]) for i in range(2)]
    assert seeds[0] == seeds[1]  # common_seed(strategy, None): the chief's draw
    for i in range(2):
        result = np.load(tmp_path / f"worker{i}.npz")
        assert bool(result["chief"]) == (i == 0) and int(result["worker"]) == i
        assert int(result["replicas"]) == 2
        # The losses reported (train and validation) are the global-batch ones.
        worker_history = json.loads(str(result["history"]))
        assert worker_history.keys() == history.history.keys()
        for name, values in history.history.items():
            np.testing.assert_allclose(worker_history[name], values, rtol=1e-4, atol=1e-5,
                                       err_msg=name)
        for path, value in expected.items():
            update = np.abs(value - init[path]).max()
            np.testing.assert_allclose(result[path.replace("/", "|")], value, rtol=0,
                                       atol=1e-6 + 1e-2 * update, err_msg=path)
        assert max(np.abs(expected[p] - init[p]).max() for p in init) > 1e-2

    chief_files = [os.path.relpath(os.path.join(d, f), tmp_path / "worker0")
                   for d, _, fs in os.walk(tmp_path / "worker0") for f in fs]
    checkpoints = [f for f in chief_files if f.endswith(".h5")]
    assert len(checkpoints) == 1, chief_files
    run_dir, name = os.path.split(checkpoints[0])
    assert name == "mask_rcnn_tinyshapes_0001.h5" and run_dir.startswith("tinyshapes")
    assert not os.path.exists(tmp_path / "worker1"), os.listdir(tmp_path / "worker1")
