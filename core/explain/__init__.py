"""Explanations for 2D and 3D classifiers: attribution methods, layer choice, alignment scores.

One package, one concern per module:

- :mod:`core.explain.attribution`: the entry point ``attribution(model, x, method, ...)`` and
  :data:`METHODS`; :mod:`core.explain.base`: the method base class and registry.
- :mod:`core.explain.cams`: Grad-CAM, Grad-CAM++, HiResCAM, LayerCAM (also fused), Score-CAM.
- :mod:`core.explain.gradients`: Integrated Gradients, SmoothGrad (pixel/voxel level).
- :mod:`core.explain.gradcam`: Grad-CAM maths, rank-agnostic (images and volumes); a CAM
  method is a channel-weight function in :data:`CAM_WEIGHTS`.
- :mod:`core.explain.layers`: which layer is explained and which tensor is the class score.
- :mod:`core.explain.occlusion`: gradient-free occlusion maps (Keras or TFLite predict).
- :mod:`core.explain.alignment`: anatomy masks, energy in mask, deletion curves, explain.json.
- :mod:`core.imaging`: the drawing (colormaps, overlays, slices), numpy only, re-exported here.
- ``python -m core.explain RUN`` (:mod:`core.explain.__main__`): writes ``<run>/explain.json``.

Public entry points:
    attribution(model, x, method, class_index=None, layer_name=None) -> maps in [0, 1]
    METHODS                                               -> names attribution() accepts
    grad_cam(model, x, layer_name=None, class_index=None) -> heatmaps in [0, 1]
    grad_cam_plus_plus(...)                               -> same, Grad-CAM++ weights
    occlusion_map(predict_fn, x, class_index, ...)        -> gradient-free map (works on TFLite)
    alignment_summary(model, x, y, flag, n=...)           -> "does attention hit anatomy?" numbers
    compute_alignment_run(run_dir)                        -> writes <run>/explain.json
"""

from core.explain.alignment import (
    MASK_FLAGS,
    alignment_summary,
    anatomy_mask,
    compute_alignment_run,
    deletion_curve,
    energy_in_mask,
)
from core.explain.attribution import (
    METHODS,
    attribution,
    describe_layers,
    get_method,
    method_info,
    resolve_layers,
)
from core.explain.gradcam import (
    CAM_WEIGHTS,
    UPSAMPLE_MODES,
    grad_cam,
    grad_cam_plus_plus,
    gradcam_plus_plus_weights,
    gradcam_weights,
    validate_input,
)
from core.explain.layers import (
    MIN_GRID,
    candidate_layers,
    conv_layers,
    default_layer,
    fused_layers,
    layer_grid,
    spatial_layers,
)
from core.explain.occlusion import keras_predict_fn, occlusion_agreement, occlusion_map
from core.imaging import colorize, overlay, overlay_slice, take_slice

__all__ = [
    "CAM_WEIGHTS",
    "MASK_FLAGS",
    "METHODS",
    "MIN_GRID",
    "UPSAMPLE_MODES",
    "alignment_summary",
    "anatomy_mask",
    "attribution",
    "candidate_layers",
    "colorize",
    "compute_alignment_run",
    "conv_layers",
    "default_layer",
    "deletion_curve",
    "describe_layers",
    "energy_in_mask",
    "fused_layers",
    "get_method",
    "grad_cam",
    "grad_cam_plus_plus",
    "gradcam_plus_plus_weights",
    "gradcam_weights",
    "keras_predict_fn",
    "layer_grid",
    "method_info",
    "occlusion_agreement",
    "occlusion_map",
    "overlay",
    "overlay_slice",
    "resolve_layers",
    "spatial_layers",
    "take_slice",
    "validate_input",
]
