"""VGG16 transfer learning as one flat graph: in-graph resize + caffe preprocessing + VGG16.

Flat, never nested: a VGG16 used as a layer breaks Grad-CAM ("Graph disconnected") and tfmot
("Quantizing a tf.keras Model inside another tf.keras Model is not supported").
"""

from __future__ import annotations

import numpy as np
import tf_keras as keras
from tf_keras.applications import vgg16 as keras_vgg16

from core import config
from core.models.layers import classifier_head

# caffe-mode preprocess_input: RGB→BGR, ×255, minus the ImageNet BGR means.
_BGR_MEANS = np.array([103.939, 116.779, 123.68], dtype=np.float32)
BLOCKS = tuple(f"block{i}" for i in range(1, 6))


def _caffe_kernel() -> tuple[np.ndarray, np.ndarray]:
    kernel = np.zeros((1, 1, 3, 3), dtype=np.float32)
    for rgb in range(3):
        kernel[0, 0, rgb, 2 - rgb] = 255.0
    return kernel, -_BGR_MEANS


# Where Keras' own VGG16(weights="imagenet") fetches the no-top weights, and their MD5. Kept here
# rather than read from tf_keras.applications.vgg16: tf-keras 2.21 no longer exports the constant
# there (it moved to a private module), which broke every VGG16 run with VGG16_WEIGHTS unset.
WEIGHTS_FILE_NO_TOP = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
WEIGHTS_URL_NO_TOP = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/" + WEIGHTS_FILE_NO_TOP
)
WEIGHTS_MD5_NO_TOP = "6d6bbae143d832006294945121d1f1fc"


class WeightsUnavailableError(RuntimeError):
    """The ImageNet VGG16 weights could neither be found locally nor downloaded."""


def resolve_weights(weights: str | None) -> str | None:
    """Path of the no-top ImageNet weights: a local file, Keras' download, or None (random).

    Args:
        weights: ``"imagenet"`` (download into Keras' cache, ``~/.keras/models``, once; a file
            already there is reused after its MD5 check), a local ``.h5`` path, or None.

    Returns:
        A local file path, or None for random initialisation.

    Raises:
        WeightsUnavailableError: the download failed (no network, a proxy, a bad file); the
            message names ``VGG16_WEIGHTS`` and the steps to use a local copy.
    """
    if weights is None:
        return None
    if weights != "imagenet":
        return weights
    try:
        return keras.utils.get_file(
            WEIGHTS_FILE_NO_TOP,
            WEIGHTS_URL_NO_TOP,
            cache_subdir="models",
            file_hash=WEIGHTS_MD5_NO_TOP,
        )
    except Exception as exc:  # get_file raises bare Exception for network errors
        raise WeightsUnavailableError(
            f"Could not download the ImageNet VGG16 weights ({WEIGHTS_FILE_NO_TOP}) that every "
            f"VGG16 model needs: {str(exc).strip() or type(exc).__name__}.\n"
            "  1. Check the internet connection (the file comes from Keras' storage server, "
            "58.9 MB) and try again, or\n"
            f"  2. copy {WEIGHTS_FILE_NO_TOP} from a machine that has it (Keras keeps it in "
            "~/.keras/models/) and set VGG16_WEIGHTS to its full path, then restart."
        ) from exc


def build_vgg16(
    input_shape: tuple[int, ...],
    num_classes: int,
    task: str,
    *,
    input_size: int = 32,
    fine_tune_blocks: int = 0,
    weights: str | None = "default",
    dense_units: int = 256,
    dropout: float = 0.5,
    name: str = "vgg16_transfer",
) -> keras.Model:
    """ImageNet VGG16 backbone with a GAP → BN → FC → Dropout → classifier head.

    Args:
        input_shape: ``(H, W, 3)`` images in [0, 1] (grey data: repeat to RGB first).
        num_classes: output units (2 for binary tasks).
        task: medmnist task string.
        input_size: side the images are resized to inside the graph (VGG16 needs ≥ 32).
        fine_tune_blocks: 0 = whole backbone frozen; N = the last N conv blocks train.
        weights: ``"default"`` (the ``VGG16_WEIGHTS`` setting), ``"imagenet"``, a local ``.h5``
            path, or None for random initialisation (tests).
        dense_units: width of the fully connected layer.
        dropout: dropout before the classifier.
        name: model name.
    """
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"vgg16 needs (H, W, 3) RGB input, got {input_shape}")
    if input_size < 32:
        raise ValueError(f"VGG16 needs input_size >= 32, got {input_size}")
    if not 0 <= fine_tune_blocks <= len(BLOCKS):
        raise ValueError(f"fine_tune_blocks must be in 0..{len(BLOCKS)}, got {fine_tune_blocks}")
    if weights == "default":
        weights = config.vgg16_weights()
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    if input_shape[0] != input_size or input_shape[1] != input_size:
        x = keras.layers.Resizing(input_size, input_size, interpolation="bilinear", name="resize")(
            x
        )
    # A frozen 1×1 convolution does caffe preprocessing with ops TFLite and tfmot both know.
    preprocess = keras.layers.Conv2D(3, 1, name="caffe_preprocess", trainable=False)
    x = preprocess(x)
    preprocess.set_weights(list(_caffe_kernel()))
    base = keras_vgg16.VGG16(include_top=False, weights=None, input_tensor=x)
    trainable_blocks = set(BLOCKS[len(BLOCKS) - fine_tune_blocks :]) if fine_tune_blocks else set()
    for layer in base.layers:
        if layer.name.startswith("block"):
            layer.trainable = layer.name.split("_")[0] in trainable_blocks
    y = keras.layers.GlobalAveragePooling2D(name="gap")(base.output)
    # Without this BatchNorm, fine-tuning collapsed to a constant prediction in the first epoch:
    # block5's raw activations are large and unnormalised for a freshly initialised head.
    y = keras.layers.BatchNormalization(name="head_bn")(y)
    y = keras.layers.Dense(dense_units, activation="relu", name="fc1")(y)
    y = keras.layers.Dropout(dropout, name="dropout")(y)
    model = keras.Model(inputs, classifier_head(y, num_classes, task), name=name)
    path = resolve_weights(weights)
    if path is not None:
        model.load_weights(path, by_name=True)
    return model


def backbone_layer_names(model: keras.Model) -> list[str]:
    """Names of the VGG16 conv layers (the ones ImageNet weights fill)."""
    return [
        layer.name for layer in model.layers if layer.name.startswith("block") and layer.weights
    ]
