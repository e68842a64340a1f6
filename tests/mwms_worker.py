"""One worker of the two-process MultiWorkerMirroredStrategy test
(tests/test_distribute.py::test_multi_worker_two_processes_match_one_process).

    TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:P0", "127.0.0.1:P1"]},
                "task": {"type": "worker", "index": I}}' \\
    python -m tests.mwms_worker --init INIT.h5 --model-dir DIR --out OUT.npz

Creates the strategy first thing (collective ops must be configured before
TensorFlow runs anything), loads the initial weights, trains one epoch of
STEPS_PER_EPOCH (2) steps with ``MaskRCNN.train`` on the tiny shapes config
(IMAGES_PER_GPU 1 per worker: a global batch of 2) with one validation
step, and writes its final weights and History to ``--out``. One intra-op
and one inter-op thread: two processes share the test machine's cores.
"""
import argparse
import json
import os
import sys


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--init", required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    # A collective that never completes (the other worker died) fails after
    # this many seconds instead of hanging the test.
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=args.timeout)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import keras
    import numpy as np

    from mrcnn import distribute
    from mrcnn import model as modellib
    from tests import distribute_helpers as H

    config = H.make_config(IMAGES_PER_GPU=1, **H.EXACT)
    with H.deterministic_targets():
        model = modellib.MaskRCNN("training", config, args.model_dir, strategy=strategy)
        model.load_weights(args.init, by_name=True)
        history = model.train(H.shapes(8, seed=1), H.shapes(4, seed=2),
                              learning_rate=config.LEARNING_RATE, epochs=1, layers="all",
                              verbose=0, seed=0, workers=1)
    # Without a seed every worker must use the same (the chief's) data seed.
    shared_seed = distribute.common_seed(strategy, None)
    np.savez(args.out, chief=distribute.is_chief(strategy), shared_seed=shared_seed,
             history=json.dumps(history.history),
             replicas=strategy.num_replicas_in_sync, worker=distribute.worker_index(strategy),
             **{w.path.replace("/", "|"): keras.ops.convert_to_numpy(w)
                for w in model.keras_model.weights})


if __name__ == "__main__":
    main()
