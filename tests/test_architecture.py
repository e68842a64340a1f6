"""The package's shape: no import cycles, no hidden function-level imports of
mrcnn modules, no imports of the samples, small modules, and every public
name of Matterport's modules (and of our own earlier layout) still importable
from where it was."""
import ast
import importlib
import pathlib

import pytest

PACKAGE_DIR = pathlib.Path(__file__).resolve().parents[1] / "mrcnn"

# Function-level imports of mrcnn modules that are deliberate, each
# documented where it is: the CPU recipe's backbone builds its layers with
# keras and mrcnn.layers imported on use, so that a Config naming it does not
# import TensorFlow. mrcnn.utils imports its two TensorFlow helpers on first
# use through importlib (PEP 562 __getattr__), tested below.
ALLOWED_LAZY_IMPORTS = {("mrcnn.graph.small_backbone", "mrcnn.layers.batch_norm")}

# The longest a module may be (issue 13: "no module over ~600 lines").
MAX_MODULE_LINES = 650

# Matterport's public names, module by module (commit 3deaec5).
MATTERPORT_NAMES = {
    "mrcnn.config": ["Config"],
    "mrcnn.utils": [
        "extract_bboxes", "compute_iou", "compute_overlaps", "compute_overlaps_masks",
        "non_max_suppression", "apply_box_deltas", "box_refinement_graph", "box_refinement",
        "Dataset", "resize_image", "resize_mask", "minimize_mask", "expand_mask",
        "unmold_mask", "generate_anchors", "generate_pyramid_anchors", "trim_zeros",
        "compute_matches", "compute_ap", "compute_ap_range", "compute_recall",
        "batch_slice", "download_trained_weights", "norm_boxes", "denorm_boxes", "resize",
        "COCO_MODEL_URL"],
    "mrcnn.model": [
        "log", "BatchNorm", "compute_backbone_shapes", "identity_block", "conv_block",
        "resnet_graph", "apply_box_deltas_graph", "clip_boxes_graph", "ProposalLayer",
        "log2_graph", "PyramidROIAlign", "overlaps_graph", "detection_targets_graph",
        "DetectionTargetLayer", "refine_detections_graph", "DetectionLayer", "rpn_graph",
        "build_rpn_model", "fpn_classifier_graph", "build_fpn_mask_graph", "smooth_l1_loss",
        "rpn_class_loss_graph", "rpn_bbox_loss_graph", "mrcnn_class_loss_graph",
        "mrcnn_bbox_loss_graph", "mrcnn_mask_loss_graph", "load_image_gt",
        "build_detection_targets", "build_rpn_targets", "generate_random_rois",
        "data_generator", "MaskRCNN", "compose_image_meta", "parse_image_meta",
        "parse_image_meta_graph", "mold_image", "unmold_image", "trim_zeros_graph",
        "batch_pack_graph", "norm_boxes_graph", "denorm_boxes_graph", "batch_slice"],
    "mrcnn.visualize": [
        "display_images", "random_colors", "apply_mask", "display_instances",
        "display_differences", "draw_rois", "draw_box", "display_top_masks",
        "plot_precision_recall", "plot_overlaps", "draw_boxes", "display_table",
        "display_weight_stats"],
    "mrcnn.parallel_model": ["ParallelModel"],
}

# Our own earlier import paths (before the modules were split).
EARLIER_NAMES = {
    "mrcnn.data": ["load_image_gt", "build_rpn_targets", "build_detection_targets",
                   "generate_random_rois"],
    "mrcnn.training": ["DataSequence", "Checkpoint", "MaskRCNNTrainingModel",
                       "ClippedMomentumSGD", "compile_model", "set_trainable", "train",
                       "LAYER_PRESETS", "LOSS_NAMES", "resolve_layers"],
    "mrcnn.graph.backbone": ["BatchNorm", "FoldedConv2D", "conv_bn", "conv_bn_layers",
                             "compute_backbone_shapes", "resnet_graph"],
    "mrcnn.graph.heads": ["TimeDistributed", "fpn_classifier_graph", "build_fpn_mask_graph",
                          "classifier_head_graph", "mask_head_graph"],
    "mrcnn.graph.rpn": ["SparseGradConv2D", "rpn_graph", "build_rpn_model"],
    "mrcnn.graph.build": ["layer_args", "DetectionBoxes", "build_inference_model",
                          "compute_backbone_shapes", "check_image_shape",
                          "build_feature_graph", "build_rpn_graph"],
    "mrcnn.graph.training_graph": ["Anchors", "NormBoxes", "FirstRows", "ActiveClassIds",
                                   "LossOutput", "build_training_model", "anchors_layer",
                                   "anchor_count", "max_positive_rois", "LOSS_NAMES",
                                   "OUTPUT_NAMES"],
    "mrcnn.model": ["paste_masks"],
    "mrcnn.meta": ["compose_image_meta", "parse_image_meta"],
    "mrcnn.weights": ["load_weights", "save_weights", "weight_manifest", "WeightFileError",
                      "WeightMismatchError", "LoadReport", "HEAD_LAYERS"],
    "mrcnn.utils": ["read_image", "ImageReadError", "WeightsDownloadError",
                    "BBOX_LOG_SCALE_CLIP"],
    "mrcnn.ops.image_meta": ["IMAGE_META_FIXED_SIZE", "parse_image_meta_graph"],
}


def _module_name(path):
    rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules():
    return {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _imported_modules(node, module, modules):
    """mrcnn modules an Import/ImportFrom node imports."""
    out = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:  # relative import
            base = module.split(".")
            if not _modules()[module].name == "__init__.py":
                base = base[:-1]
            base = base[:len(base) - node.level + 1]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        names = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
    for name in names:
        if name in modules:
            out.append(name)
    return out


def _import_graph():
    modules = _modules()
    edges, late = {}, []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges[name] = set()
        top_level = set()
        for stmt in tree.body:
            for node in ast.walk(stmt):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    break
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    top_level.add(id(node))
                    edges[name].update(t for t in _imported_modules(node, name, modules)
                                       if t != name)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top_level:
                for target in _imported_modules(node, name, modules):
                    late.append((name, target, node.lineno))
    return edges, late


def _cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_sees_the_package():
    edges, _ = _import_graph()
    assert len(edges) > 40
    # a few edges that must be there (the test would pass vacuously otherwise)
    assert "mrcnn.transform" in edges["mrcnn.model"]
    assert "mrcnn.anchors" in edges["mrcnn.arguments"]
    assert "mrcnn.boxes" in edges["mrcnn.ops.boxes"]


def test_no_import_cycle():
    edges, _ = _import_graph()
    assert _cycles(edges) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_function_level_import_of_mrcnn_modules():
    _, late = _import_graph()
    hidden = [(m, t, line) for m, t, line in late if (m, t) not in ALLOWED_LAZY_IMPORTS]
    assert hidden == [], "function-level imports of mrcnn modules: " + ", ".join(
        f"{m}:{line} -> {t}" for m, t, line in hidden)


def test_package_never_imports_the_samples_or_edits_sys_path():
    for name, path in _modules().items():
        text = path.read_text()
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] == "samples" for a in node.names), name
            if isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] != "samples", name
        assert "sys.path.insert" not in text and "sys.path.append" not in text, name


def test_modules_are_small():
    long = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    long = {k: v for k, v in long.items() if v > MAX_MODULE_LINES}
    assert long == {}


def test_utils_does_not_import_tensorflow_until_asked():
    code = ("import sys, mrcnn.utils, mrcnn.config, mrcnn.data, mrcnn.targets;"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported';"
            "import mrcnn.utils as u; u.batch_slice; assert 'tensorflow' in sys.modules")
    import subprocess
    import sys
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE_DIR.parent)


@pytest.mark.parametrize("module, names", sorted({**MATTERPORT_NAMES}.items()))
def test_matterport_names_import_from_their_old_module(module, names):
    mod = importlib.import_module(module)
    missing = [n for n in names if not hasattr(mod, n)]
    assert missing == []


@pytest.mark.parametrize("module, names", sorted(EARLIER_NAMES.items()))
def test_earlier_import_paths_still_work(module, names):
    mod = importlib.import_module(module)
    missing = [n for n in names if not hasattr(mod, n)]
    assert missing == []


def test_parallel_model_says_what_to_use_instead():
    from mrcnn.parallel_model import ParallelModel
    with pytest.raises(NotImplementedError, match="tf.distribute"):
        ParallelModel(None, 2)
