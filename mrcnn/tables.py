"""Tables for notebooks: ``display_table`` and ``display_weight_stats``
(Matterport's ``mrcnn.visualize`` functions; ``mrcnn.visualize`` re-exports them).

Inside a Jupyter notebook they render HTML (as Matterport did); elsewhere they
print an aligned plain-text table. IPython is imported only when it is already
loaded, so it is not a dependency.
"""
import sys

import numpy as np

__all__ = ["display_table", "display_weight_stats"]


def _in_notebook():
    """True inside a Jupyter kernel (where HTML output renders)."""
    # Only look at IPython if something already imported it: a plain script
    # is never a notebook, and IPython stays an optional dependency.
    if "IPython" not in sys.modules:
        return False
    try:
        shell = sys.modules["IPython"].get_ipython()
    except Exception:  # noqa: BLE001 - any failure means "not a notebook"
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _text_table(table):
    """Rows of values -> a left-aligned plain-text table (one string)."""
    rows = [[str(col) for col in row] for row in table]
    if not rows:
        return ""
    ncols = max(len(row) for row in rows)
    widths = [max((len(row[c]) for row in rows if c < len(row)), default=0)
              for c in range(ncols)]
    return "\n".join(
        "  ".join(cell.ljust(widths[c]) for c, cell in enumerate(row)).rstrip()
        for row in rows)


def display_table(table):
    """Displays rows of values as a table.

    table: iterable of rows, each an iterable of values (shown with str()).
    In a Jupyter notebook this renders an HTML table (Matterport); elsewhere
    it prints an aligned plain-text table to stdout.
    """
    table = [list(row) for row in table]
    if _in_notebook():
        import IPython.display  # available: _in_notebook() found IPython
        html = "".join(
            "<tr>" + "".join("<td>{:40}</td>".format(str(col)) for col in row)
            + "</tr>" for row in table)
        IPython.display.display(IPython.display.HTML("<table>" + html + "</table>"))
    else:
        print(_text_table(table))


def _weight_groups(layers):
    """Yields (name_prefix, inner_layer) for every weight-holding layer.

    The prefix is the name Keras 2 (and so Matterport) gave the weights:
    a TimeDistributed wrapper lends its own name to the wrapped layer's
    weights ("mrcnn_class_conv1/kernel:0"), and the layers of a nested model
    such as "rpn_model" are listed by their own names ("rpn_conv_shared").
    """
    for layer in layers:
        inner = layer
        while type(inner).__name__ == "TimeDistributed":
            inner = inner.layer
        if getattr(inner, "layers", None):
            # A nested model (or TimeDistributed(model)): list its layers.
            yield from _weight_groups(inner.layers)
        elif inner.weights:
            yield layer.name, inner


def display_weight_stats(model):
    """Displays a table of every weight's shape, min, max and std.

    model: a ``MaskRCNN`` (its ``keras_model`` is scanned) or any Keras model.
    Weights are named the Matterport / Keras 2 way, "layer/weight:0" (e.g.
    "conv1/kernel:0"). Suspicious weights are flagged after their name:
    "*** dead?" when all values are equal (std 0; conv biases, which start at
    zero, are exempt), "*** Overflow?" when |min| or |max| > 1000, and
    "*** NaN/Inf?" when any value is not finite. Shown with ``display_table``:
    HTML in a notebook, plain text on stdout elsewhere.
    """
    keras_model = getattr(model, "keras_model", model)
    html = _in_notebook()

    def flag(text):
        return "<span style='color:red'>*** {}</span>".format(text) if html \
            else "  *** {}".format(text)

    table = [["WEIGHT NAME", "SHAPE", "MIN", "MAX", "STD"]]
    for prefix, layer in _weight_groups(keras_model.layers):
        for i, (var, w) in enumerate(zip(layer.weights, layer.get_weights())):
            weight_name = "{}/{}:0".format(prefix, var.name)
            w = np.asarray(w, dtype=np.float64)
            alert = ""
            finite = np.isfinite(w)
            if not finite.all():
                alert += flag("NaN/Inf?")
            is_conv_bias = type(layer).__name__ == "Conv2D" and i == 1
            if w.size and w.min() == w.max() and not is_conv_bias:
                alert += flag("dead?")
            if finite.any() and np.abs(w[finite]).max() > 1000:
                alert += flag("Overflow?")
            table.append([
                weight_name + alert,
                str(tuple(w.shape)),
                "{:+9.4f}".format(w.min()) if w.size else "",
                "{:+10.4f}".format(w.max()) if w.size else "",
                "{:+9.4f}".format(w.std()) if w.size else "",
            ])
    display_table(table)
