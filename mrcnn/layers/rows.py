"""FirstRows: ``x[:, :rows]`` as a layer (the mask head's positive ROIs)."""
import keras

__all__ = ["FirstRows"]


@keras.saving.register_keras_serializable(package="mrcnn")
class FirstRows(keras.layers.Layer):
    """The first ``rows`` entries of axis 1: ``x[:, :rows]``.

    Args:
        rows: how many rows to keep.

    Input: [B, N, ...] any dtype. Output: [B, min(rows, N), ...], same dtype.
    """

    def __init__(self, rows, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.rows = int(rows)
        if self.rows < 1:
            raise ValueError(f"FirstRows: rows must be >= 1, got {rows}.")
        self.built = True

    def call(self, x):
        return x[:, :self.rows]

    def compute_output_spec(self, x):
        n = x.shape[1]
        rows = self.rows if n is None else min(self.rows, n)
        return keras.KerasTensor((x.shape[0], rows) + tuple(x.shape[2:]), dtype=x.dtype)

    def get_config(self):
        config = super().get_config()
        config["rows"] = self.rows
        return config
