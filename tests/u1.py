"""Replay helper for the U1 golden cases (Matterport's NumPy utilities).

``tests/golden/u1_utils.json`` indexes 92 cases; arrays live in
``u1_utils.npz`` (see GOLDEN.md section 3). This module is generic: any test
can replay the cases of the functions it owns::

    from tests import u1

    CASES = u1.load_cases(prefix="mrcnn.model.")
    @pytest.mark.parametrize("case", CASES, ids=u1.case_id)
    def test_case(case):
        u1.check_case(case)                      # resolves case["function"]
        # or: u1.check_case(case, fn=my_function, skip_outputs=("rpn_bbox",))

Pieces: ``load_cases`` (the case dicts), ``val`` (an argument/output entry to
its Python value), ``call_args``, ``expected_outputs``, ``run_case`` (seed,
call, normalize the result to a list), ``compare`` (values, dtypes, shapes,
container and scalar types, NaN == NaN) and ``check_case`` (all of it, or
``pytest.raises`` for cases that expect an exception).
"""
import builtins
import functools
import importlib
import json
import pathlib
import random
from types import SimpleNamespace

import numpy as np

GOLDEN_DIR = pathlib.Path(__file__).parent / "golden"

# Config attributes that were NumPy arrays in Matterport's Config.
_ARRAY_CONFIG_FIELDS = ("MEAN_PIXEL", "RPN_BBOX_STD_DEV", "BBOX_STD_DEV")


@functools.lru_cache(maxsize=1)
def _index():
    with open(GOLDEN_DIR / "u1_utils.json") as f:
        return json.load(f)


@functools.lru_cache(maxsize=1)
def _arrays():
    with np.load(GOLDEN_DIR / "u1_utils.npz") as z:
        return {k: z[k] for k in z.files}


def load_cases(prefix=None, function=None):
    """The U1 case dicts, in file order.

    prefix: keep cases whose function name starts with it ("mrcnn.utils.").
    function: keep cases of one function ("mrcnn.model.build_rpn_targets" or
        just "build_rpn_targets").
    """
    cases = _index()["cases"]
    if prefix is not None:
        cases = [c for c in cases if c["function"].startswith(prefix)]
    if function is not None:
        cases = [c for c in cases
                 if c["function"] == function or c["function"].rsplit(".", 1)[1] == function]
    return list(cases)


def case_id(case):
    """A readable pytest id: "c026-resize_image"."""
    return f"{case['id']}-{case['function'].rsplit('.', 1)[1]}"


def val(entry):
    """The Python value of an argument or output entry (GOLDEN.md section 3):
    npz arrays (NumPy scalars unwrapped with their dtype), tuples restored
    from JSON lists, config objects as SimpleNamespace with NumPy arrays for
    MEAN_PIXEL / *_STD_DEV."""
    if "key" in entry:
        v = _arrays()[entry["key"]]
        if entry["type"] == "numpy scalar" or entry["type"].startswith("float (non-finite"):
            return v[()]
        return v.copy()
    v, t = entry["value"], entry["type"]
    if t.startswith("config object"):
        return SimpleNamespace(**{k: np.array(x) if k in _ARRAY_CONFIG_FIELDS else x
                                  for k, x in v.items()})
    if t.startswith("tuple"):
        return tuple(tuple(x) if isinstance(x, list) else x for x in v)
    if t.startswith("list of tuple"):
        return [tuple(x) for x in v]
    return v


def call_args(case):
    """(args list, kwargs dict) to call the case's function with."""
    args = [val(a) for a in case["args"]]
    kwargs = {k: val(v) for k, v in case["kwargs"].items()}
    return args, kwargs


def expected_outputs(case):
    """[(name, value)] of the recorded outputs, in return order."""
    return [(o["name"], val(o)) for o in case["outputs"]]


def resolve(function_name):
    """"mrcnn.utils.resize_image" -> the function object."""
    module, name = function_name.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def seed(case):
    """Seeds Python's `random` and NumPy's legacy global RNG as the case was
    recorded (only cases with a setup_seed)."""
    if case["setup_seed"] is not None:
        random.seed(case["setup_seed"])
        np.random.seed(case["setup_seed"])


def run_case(case, fn=None):
    """Seeds, calls ``fn`` (default: the case's function) and returns the
    result as a list matching ``case["outputs"]``: a tuple result as a list,
    a dict result in the order of the recorded output names, a single value
    as a one-element list."""
    fn = fn or resolve(case["function"])
    args, kwargs = call_args(case)
    seed(case)
    result = fn(*args, **kwargs)
    names = [o["name"] for o in case["outputs"]]
    if isinstance(result, dict):
        missing = [n for n in names if n not in result]
        assert not missing, f"{case['id']}: result dict lacks {missing}"
        return [result[n] for n in names]
    if len(names) == 1:
        return [result]
    assert isinstance(result, (tuple, list)) and len(result) == len(names), (
        f"{case['id']}: expected {len(names)} outputs {names}, got {type(result).__name__}")
    return list(result)


def compare(expected, got, where="value"):
    """Asserts ``got`` equals ``expected`` exactly: ndarrays by dtype, shape and
    values (NaN equal to NaN); NumPy scalars by type and value; Python
    scalars by type (int is not float) and value; tuples/lists element-wise
    with the same container type; None is None."""
    if isinstance(expected, np.ndarray):
        assert isinstance(got, np.ndarray), f"{where}: expected ndarray, got {type(got).__name__}"
        assert got.dtype == expected.dtype, f"{where}: dtype {got.dtype}, expected {expected.dtype}"
        assert got.shape == expected.shape, f"{where}: shape {got.shape}, expected {expected.shape}"
        nan_ok = expected.dtype.kind in "fc"
        if not np.array_equal(got, expected, equal_nan=nan_ok):
            bad = np.argwhere(~((got == expected) | (np.isnan(got) & np.isnan(expected))
                                if nan_ok else got != expected)) if got.ndim else []
            first = tuple(bad[0]) if len(bad) else ()
            raise AssertionError(
                f"{where}: {len(bad)} of {expected.size} values differ; first at {first}: "
                f"got {got[first]!r}, expected {expected[first]!r}")
        return
    if isinstance(expected, np.generic):
        assert type(got) is type(expected), (
            f"{where}: type {type(got).__name__}, expected {type(expected).__name__}")
        assert (got == expected) or (np.isnan(expected) and np.isnan(got)), (
            f"{where}: {got!r} != {expected!r}")
        return
    if isinstance(expected, (tuple, list)):
        assert type(got) is type(expected), (
            f"{where}: type {type(got).__name__}, expected {type(expected).__name__}")
        assert len(got) == len(expected), f"{where}: length {len(got)}, expected {len(expected)}"
        for i, (e, g) in enumerate(zip(expected, got)):
            compare(e, g, f"{where}[{i}]")
        return
    if expected is None:
        assert got is None, f"{where}: expected None, got {got!r}"
        return
    assert type(got) is type(expected), (
        f"{where}: type {type(got).__name__}, expected {type(expected).__name__} ({expected!r})")
    if isinstance(expected, float) and np.isnan(expected):
        assert np.isnan(got), f"{where}: expected NaN, got {got!r}"
    else:
        assert got == expected, f"{where}: {got!r} != {expected!r}"


def expected_exception(case):
    """The exception class a case expects (builtins name), or None."""
    if not case["raises"]:
        return None
    return getattr(builtins, case["raises"]["type"])


def check_case(case, fn=None, skip_outputs=()):
    """Replays ``case`` and compares every recorded output (except the names
    in ``skip_outputs``); for a case with ``raises``, asserts that exception
    type (or a subclass) is raised."""
    import pytest

    exc = expected_exception(case)
    if exc is not None:
        with pytest.raises(exc):
            run_case(case, fn)
        return
    got = run_case(case, fn)
    for (name, expected), g in zip(expected_outputs(case), got):
        if name in skip_outputs:
            continue
        compare(expected, g, f"{case['id']} {name}")
