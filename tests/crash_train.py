"""A small training process for the crash tests (tests/test_crash_safety.py).

    python tests/crash_train.py LOGS PROGRESS [--resume] [--epochs 3]
        [--stall-batch EPOCH:BATCH] [--stall-write EPOCH]

Trains the CPU recipe on 64 px shapes (STEPS steps per epoch, a warm-up +
cosine schedule over EPOCHS epochs). With --resume it continues from
``find_last()``. Every step is appended to PROGRESS as a JSON line (epoch,
batch, the optimizer's step count, learning rate, loss), so a test can read
what happened after the process was killed.

The stall options make the moment of a ``kill -9`` deterministic, and are
test code only (the library has no hooks): --stall-batch stops inside a
training step of epoch EPOCH (1-based) at BATCH; --stall-write stops in the
middle of writing the checkpoint of epoch EPOCH, half of its layers written
and flushed to the temporary file. Either writes a "stalled" line and sleeps
until killed.
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

STEPS = 3
TINY = dict(IMAGE_MIN_DIM=64, IMAGE_MAX_DIM=64, STEPS_PER_EPOCH=STEPS, IMAGES_PER_GPU=2,
            VALIDATION_STEPS=1, RPN_ANCHOR_SCALES=(16, 24, 32, 48, 64))
PEAK = 0.02


def schedule_args(epochs):
    """(total_steps, peak) of the run's schedule, for the test's own copy."""
    return epochs * STEPS, PEAK


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("logs")
    parser.add_argument("progress")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--stall-batch", default=None)
    parser.add_argument("--stall-write", type=int, default=None)
    args = parser.parse_args(argv)

    import keras

    import mrcnn.demo
    from mrcnn import model as modellib
    from mrcnn import weight_files
    from mrcnn.recipes import CpuShapesConfig, learning_rate_schedule

    out = open(args.progress, "a", buffering=1)

    def note(**event):
        out.write(json.dumps(dict(event, pid=os.getpid(), time=time.time())) + "\n")
        out.flush()
        os.fsync(out.fileno())

    def stall(where):
        note(event="stalled", where=where)
        time.sleep(600)

    if args.stall_write is not None:
        # Stop halfway through the layers of the checkpoint of that epoch.
        tag = f"_{args.stall_write:04d}.h5."
        state = {}
        write, entries = weight_files._write_keras2, weight_files._layer_entries

        def stalling_write(f, keras_model):
            if tag in os.path.basename(f.filename):
                state.update(f=f, n=0, half=len(keras_model.layers) // 2)
            try:
                write(f, keras_model)
            finally:
                state.pop("f", None)

        def stalling_entries(layer):
            if "f" in state:
                state["n"] += 1
                if state["n"] == state["half"]:
                    state["f"].flush()
                    stall(f"write:{state['f'].filename}")
            return entries(layer)
        weight_files._write_keras2 = stalling_write
        weight_files._layer_entries = stalling_entries

    stall_at = tuple(int(v) for v in args.stall_batch.split(":")) if args.stall_batch else None

    class Progress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            note(event="start", epoch=model.epoch,
                 iterations=int(self.model.optimizer.iterations))

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch + 1

        def on_train_batch_begin(self, batch, logs=None):
            self.at = (int(self.model.optimizer.iterations),
                       float(self.model.optimizer.learning_rate))
            if stall_at == (self.epoch, batch):
                stall(f"batch:{self.epoch}:{batch}")

        def on_train_batch_end(self, batch, logs=None):
            note(event="batch", epoch=self.epoch, batch=batch, iterations=self.at[0],
                 lr=self.at[1], loss=float(logs["loss"]))

        def on_epoch_end(self, epoch, logs=None):
            note(event="epoch", epoch=epoch + 1, loss=float(logs["loss"]))

    mrcnn.demo.seed_everything(7)
    config = mrcnn.demo.make_config(CpuShapesConfig, **TINY)
    model = modellib.MaskRCNN("training", config, args.logs)
    if args.resume:
        last = model.find_last()
        model.load_weights(last, by_name=True)
        note(event="resumed", path=last, epoch=model.epoch)
    data = mrcnn.demo.make_shapes(6, config, seed=7)
    total, peak = schedule_args(args.epochs)
    schedule = learning_rate_schedule(config, total_steps=total, peak=peak)
    model.train(data, None, schedule, epochs=args.epochs, layers="all",
                custom_callbacks=[Progress()], verbose=0, seed=7, workers=1)
    note(event="done", epoch=model.epoch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
