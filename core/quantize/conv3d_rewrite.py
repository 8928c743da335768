"""Exact rewrite of Conv3D into Conv2D over depth-shifted views, so 3D models quantize fully.

TFLite has no integer ``CONV_3D`` kernel: a full-integer conversion keeps every Conv3D in
float32 between QUANTIZE/DEQUANTIZE ops, with float32 weights. This module rebuilds a model so
each Conv3D (kernel ``kd×kh×kw``, strides ``(sd, sh, sw)``, ``same``/``valid``) becomes ops
TFLite runs in int8:

1. :class:`DepthTaps`: PAD the depth axis (``same`` only, TensorFlow's split of the padding),
   take the ``kd`` depth-shifted, depth-strided views with STRIDED_SLICE, CONCATENATE them on
   the channel axis and RESHAPE depth into the batch: ``(N·Do, H, W, kd·C)``.
2. One ``Conv2D`` over ``(H, W)`` whose kernel is the Conv3D kernel with its depth taps moved
   into the input channels (``(kh, kw, kd·C, F)``), same H/W strides and padding (TensorFlow
   pads each axis the same way in 2D and 3D).
3. :class:`DepthUntaps`: RESHAPE back to ``(N, Do, Ho, Wo, F)``.

A Conv3D whose taps have few channels (a volume's first conv, ``kd·C ≤ 8``) computes ``g``
output depths per Conv2D row instead (``group``): ``(N·Do/g, H, W, T·C)`` taps with
``T = (g−1)·sd + kd``, a ``g·F``-filter kernel that is zero where a depth does not read a tap
(adding zeros is exact), then :class:`DepthUngroup` (RESHAPE, TRANSPOSE, RESHAPE) back to one
depth per row. XNNPACK's int8 Conv2D costs about the same per output pixel for 16 or 64
filters when its input has few channels, so cnn3d's first conv went 0.80 → 0.21 ms (1 thread)
for a 3 KB larger kernel. Depth-strided taps come from unit-stride slices of a
``(N, blocks, sd·g, H·W, C)`` view: XNNPACK ran ``x[:, i::step]`` slices several times slower.

Taps go into channels rather than into ``kd`` Conv2D ops summed with ADD: one convolution
accumulates all ``kd·kh·kw·C`` products in int32 and rounds once, where ``kd`` requantized
partial sums and ADDs would round ``2·kd − 1`` times (and run ``kd`` small convolutions).

A BatchNormalization that is the Conv3D's only consumer is folded into the Conv2D kernel and
bias, and a plain ReLU after it into the Conv2D's activation: across the RESHAPE the converter
cannot fuse them itself, and left alone they would be separate int8 MUL/ADD/RELU ops, each
one more rounding. Everything else is cloned with its weights, so MaxPool3DBuiltin (the
builtin-op pooling), GlobalAveragePooling3D (MEAN), Flatten (RESHAPE), Add and Dense already
have int8 kernels.

Usage::

    rewritten, note = rewrite_conv3d(model)   # note is None when the model has no Conv3D
    np.testing.assert_allclose(rewritten.predict(x), model.predict(x), atol=1e-5)

:func:`core.quantize.quantize` applies it for the integer modes (``dynamic``, ``int8``, ``qat``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's ``SAME`` padding ``(before, after)`` of one axis (the extra one goes after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _out_size(size: int, kernel: int, stride: int, padding: str) -> int:
    if padding == "same":
        return -(-size // stride)
    return (size - kernel) // stride + 1


@keras.saving.register_keras_serializable(package="core")
class DepthTaps(keras.layers.Layer):
    """``(N, D, H, W, C)`` → ``(N·Do, H, W, kd·C)``: the depth taps of a Conv3D as channels.

    Pure data movement (PAD, STRIDED_SLICE, CONCATENATION, RESHAPE), exact in any dtype; in a
    quantized graph it keeps its input's scale (see ``quantize_passthrough``).

    With ``group`` g > 1 each batch row carries the taps of g consecutive output depths:
    ``(N·Do/g, H, W, T·C)`` with ``T = (g−1)·sd + kd`` (the Conv2D then has g·F filters).

    Args:
        kernel_depth: ``kd``, the Conv3D kernel's depth.
        stride: ``sd``, the Conv3D's depth stride.
        padding: ``"same"`` or ``"valid"`` (the Conv3D's padding).
        group: ``g``, output depths per batch row; must divide ``Do``.
    """

    # No fake-quant of its own in QAT (core.quantize.qat): the values are the input's values.
    quantize_passthrough = True

    def __init__(
        self, kernel_depth: int, stride: int, padding: str, group: int = 1, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.kernel_depth = int(kernel_depth)
        self.stride = int(stride)
        self.padding = padding.lower()
        self.group = int(group)

    @property
    def taps(self) -> int:
        """``T``, the depth slices each batch row holds."""
        return (self.group - 1) * self.stride + self.kernel_depth

    def _geometry(self, depth: int) -> tuple[tuple[int, int], int]:
        pad = (
            same_padding(depth, self.kernel_depth, self.stride)
            if self.padding == "same"
            else (0, 0)
        )
        return pad, _out_size(depth, self.kernel_depth, self.stride, self.padding)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        d, h, w, c = (int(v) for v in inputs.shape[1:])
        (before, after), out = self._geometry(d)
        if out % self.group:
            raise ValueError(f"group {self.group} does not divide the output depth {out}")
        rows, step = out // self.group, self.stride * self.group
        x = inputs
        if step == 1:
            if before or after:
                x = tf.pad(x, [[0, 0], [before, after], [0, 0], [0, 0], [0, 0]])
            views = [x[:, i : i + rows] for i in range(self.taps)]
        else:
            # Depth split into blocks of `step`: tap i of row j is block j + i // step, slot
            # i % step. Unit-stride slices only; XNNPACK ran the depth-strided slices of
            # x[:, i::step] about 4x slower (measured on cnn3d's first conv).
            blocks = rows + (self.taps - 1) // step
            after = blocks * step - before - d
            if after < 0:  # valid padding: trailing depths no tap reads
                x, after = x[:, : d + after], 0
            if before or after:
                x = tf.pad(x, [[0, 0], [before, after], [0, 0], [0, 0], [0, 0]])
            x = tf.reshape(x, [-1, blocks, step, h * w, c])
            views = [
                x[:, i // step : i // step + rows, i % step : i % step + 1]
                for i in range(self.taps)
            ]
        x = views[0] if len(views) == 1 else tf.concat(views, axis=-1)
        return tf.reshape(x, [-1, h, w, self.taps * c])

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        n, d, h, w, c = tf.TensorShape(input_shape).as_list()
        _, out = self._geometry(d)
        rows = None if n is None else n * out // self.group
        return tf.TensorShape([rows, h, w, self.taps * c])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "kernel_depth": self.kernel_depth,
            "stride": self.stride,
            "padding": self.padding,
            "group": self.group,
        }


@keras.saving.register_keras_serializable(package="core")
class DepthUngroup(keras.layers.Layer):
    """``(N·Do/g, Ho, Wo, g·F)`` → ``(N·Do, Ho, Wo, F)``: one depth per row again.

    RESHAPE, TRANSPOSE, RESHAPE: exact, and keeps its input's scale when quantized.

    Args:
        group: ``g``, the output depths each input row carries.
    """

    quantize_passthrough = True

    def __init__(self, group: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.group = int(group)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        h, w, gf = (int(v) for v in inputs.shape[1:])
        f = gf // self.group
        x = tf.reshape(inputs, [-1, h, w, self.group, f])
        x = tf.transpose(x, [0, 3, 1, 2, 4])
        return tf.reshape(x, [-1, h, w, f])

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        n, h, w, gf = tf.TensorShape(input_shape).as_list()
        rows = None if n is None else n * self.group
        return tf.TensorShape([rows, h, w, gf // self.group])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "group": self.group}


@keras.saving.register_keras_serializable(package="core")
class DepthUntaps(keras.layers.Layer):
    """``(N·Do, Ho, Wo, F)`` → ``(N, Do, Ho, Wo, F)``: depth back out of the batch (a RESHAPE).

    Args:
        depth: ``Do``, the Conv3D's output depth.
    """

    quantize_passthrough = True

    def __init__(self, depth: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.depth = int(depth)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        h, w, f = (int(v) for v in inputs.shape[1:])
        return tf.reshape(inputs, [-1, self.depth, h, w, f])

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        n, h, w, f = tf.TensorShape(input_shape).as_list()
        return tf.TensorShape([None if n is None else n // self.depth, self.depth, h, w, f])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "depth": self.depth}


# ------------------------------------------------------------------------------------------
# The graph walk


def _nodes(model: keras.Model) -> list[Any]:
    """The model's own nodes, inputs first (Keras numbers depth from the outputs)."""
    by_depth = model._nodes_by_depth  # noqa: SLF001 - tf-keras keeps the functional graph here
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def _consumers(nodes: list[Any]) -> dict[int, list[Any]]:
    """``id(tensor)`` → the nodes that read it."""
    readers: dict[int, list[Any]] = {}
    for node in nodes:
        for t in node.keras_inputs:
            readers.setdefault(id(t), []).append(node)
    return readers


def _rewritable(layer: keras.layers.Layer) -> str | None:
    """Why this Conv3D cannot be rewritten, or None when it can."""
    cfg = layer.get_config()
    if cfg.get("data_format", "channels_last") != "channels_last":
        return "channels_first"
    if tuple(np.atleast_1d(cfg.get("dilation_rate", 1))) not in ((1,), (1, 1, 1)):
        return "dilated"
    if int(cfg.get("groups", 1)) != 1:
        return "grouped"
    return None


def _is_plain_relu(layer: keras.layers.Layer) -> bool:
    if isinstance(layer, keras.layers.ReLU):
        cfg = layer.get_config()
        return (
            cfg.get("max_value") is None
            and not cfg.get("negative_slope")
            and not cfg.get("threshold")
        )
    if isinstance(layer, keras.layers.Activation):
        return getattr(layer.activation, "__name__", "") == "relu"
    return False


def _batchnorm_affine(bn: keras.layers.BatchNormalization) -> tuple[np.ndarray, np.ndarray]:
    """BatchNorm at inference as ``s·x + t`` per channel."""
    names = [w.name.split("/")[-1].split(":")[0] for w in bn.weights]
    weights = dict(zip(names, bn.get_weights(), strict=True))
    mean, var = weights["moving_mean"], weights["moving_variance"]
    scale = weights.get("gamma", np.ones_like(mean)) / np.sqrt(var + bn.epsilon)
    shift = weights.get("beta", np.zeros_like(mean)) - mean * scale
    return scale, shift


def _follower(node: Any, readers: dict[int, list[Any]], outputs: set[int]) -> Any | None:
    """The single node reading ``node``'s single output, if the output goes nowhere else."""
    (out,) = tf.nest.flatten(node.outputs)
    nxt = readers.get(id(out), [])
    if len(nxt) != 1 or id(out) in outputs or len(nxt[0].keras_inputs) != 1:
        return None
    return nxt[0]


def _fusion(
    node: Any, readers: dict[int, list[Any]], outputs: set[int]
) -> tuple[Any | None, Any | None]:
    """The BatchNorm node to fold into this conv node, and the ReLU node after it, if any."""
    conv = node.layer
    if getattr(conv.activation, "__name__", "") != "linear":
        return None, None  # a BatchNorm after a nonlinearity does not fold into the kernel
    bn = _follower(node, readers, outputs)
    if bn is None or not isinstance(bn.layer, keras.layers.BatchNormalization):
        return None, None
    if tuple(np.atleast_1d(bn.layer.axis)) not in ((-1,), (4,)):
        return None, None
    relu = _follower(bn, readers, outputs)
    return bn, relu if relu is not None and _is_plain_relu(relu.layer) else None


def _conv2d_weights(
    conv: keras.layers.Conv3D, bn: keras.layers.BatchNormalization | None, group: int = 1
) -> list[np.ndarray]:
    kernel, *bias = conv.get_weights()
    kd, kh, kw, c, f = kernel.shape
    sd = int(conv.get_config()["strides"][0])
    bias_v = bias[0] if bias else np.zeros(f, kernel.dtype)
    if bn is not None:
        scale, shift = _batchnorm_affine(bn)
        kernel, bias_v = kernel * scale, bias_v * scale + shift
    # (kd, kh, kw, C, F) → (kh, kw, kd, C, F): DepthTaps stacks tap i's C channels at
    # [i·C, (i+1)·C). With g > 1, filter block r (output depth j·g + r) reads taps
    # r·sd … r·sd + kd − 1 of its row; the other taps get zero weights (exact: they add 0).
    taps = (group - 1) * sd + kd
    grouped = np.zeros((kh, kw, taps, c, group, f), np.float64)
    per_tap = np.transpose(kernel, (1, 2, 0, 3, 4))
    for r in range(group):
        grouped[:, :, r * sd : r * sd + kd, :, r, :] = per_tap
    kernel2d = grouped.reshape(kh, kw, taps * c, group * f)
    return [kernel2d.astype(np.float32), np.tile(bias_v, group).astype(np.float32)]


@keras.saving.register_keras_serializable(package="core")
class DepthGroupMask(keras.constraints.Constraint):
    """Keeps a grouped Conv2D kernel's structural zeros at zero while QAT fine-tunes it.

    Filter block r (output depth j·g + r) may only read taps ``r·sd … r·sd + kd − 1``; without
    this the optimizer would give each depth of a group its own filters, and the model would
    stop being a convolution along depth.

    Args:
        kernel_depth: ``kd``.
        stride: ``sd``.
        group: ``g``.
    """

    def __init__(self, kernel_depth: int, stride: int, group: int) -> None:
        self.kernel_depth, self.stride, self.group = int(kernel_depth), int(stride), int(group)

    def mask(self, shape: Any) -> np.ndarray:
        """The 0/1 mask of a ``(kh, kw, T·C, g·F)`` kernel."""
        kh, kw, tc, gf = (int(v) for v in shape)
        taps = (self.group - 1) * self.stride + self.kernel_depth
        tap = np.arange(taps)[:, None] - self.stride * np.arange(self.group)[None, :]
        allowed = ((tap >= 0) & (tap < self.kernel_depth)).astype(np.float32)  # (T, g)
        c, f = tc // taps, gf // self.group
        full = np.broadcast_to(allowed[:, None, :, None], (taps, c, self.group, f))
        return np.broadcast_to(full.reshape(tc, gf), (kh, kw, tc, gf))

    def __call__(self, w: tf.Tensor) -> tf.Tensor:
        return w * tf.constant(self.mask(w.shape), w.dtype)

    def get_config(self) -> dict[str, Any]:
        return {"kernel_depth": self.kernel_depth, "stride": self.stride, "group": self.group}


def _depth_group(out_depth: int, taps_channels: int, filters: int, width: int) -> int:
    """How many output depths one Conv2D row computes (1: the plain rewrite).

    Measured with XNNPACK int8 on this 2-core AVX-512/AMX CPU: a Conv2D costs about the same per
    output pixel whatever its filters up to 64 when its input has few channels (cnn3d's first
    conv: 28·28·28 pixels, 3 channels, 16 filters, 0.80 ms; as 7·28·28 pixels, 6 channels, 64
    filters, 0.21 ms). So a conv whose input taps have at most 8 channels (a volume's first
    conv) computes g output depths per row, the largest divisor of ``Do`` with ``g·F ≤ width``.
    Its kernel grows about g-fold (3.5 KB for cnn3d), which is why wider convs are left alone:
    cnn3d's second conv grouped by 2 ran 0.11 → 0.07 ms but added 23 KB.
    """
    if taps_channels > 8 or filters * 2 > width:
        return 1
    return max(g for g in range(1, out_depth + 1) if out_depth % g == 0 and g * filters <= width)


def _conv3d_as_2d(
    x: tf.Tensor,
    conv: keras.layers.Conv3D,
    bn: keras.layers.BatchNormalization | None,
    relu: bool,
    group_width: int,
) -> tuple[tf.Tensor, int]:
    """The folded ``(N·Do, Ho, Wo, F)`` output of ``conv`` (+ ``bn``, ReLU) on 5D ``x``, and Do."""
    cfg = conv.get_config()
    kd, kh, kw = cfg["kernel_size"]
    sd, sh, sw = cfg["strides"]
    padding = cfg["padding"].lower()
    out_depth = _out_size(int(x.shape[1]), kd, sd, padding)
    group = _depth_group(out_depth, kd * int(x.shape[-1]), cfg["filters"], group_width)
    y = DepthTaps(kd, sd, padding, group, name=f"{conv.name}_depth_taps")(x)
    conv2d = keras.layers.Conv2D(
        cfg["filters"] * group,
        (kh, kw),
        strides=(sh, sw),
        padding=padding,
        activation="relu" if relu else cfg["activation"],
        use_bias=True,
        kernel_constraint=DepthGroupMask(kd, sd, group) if group > 1 else None,
        name=conv.name,
    )
    y = conv2d(y)
    conv2d.set_weights(_conv2d_weights(conv, bn, group))
    conv2d.trainable = conv.trainable
    if group > 1:
        y = DepthUngroup(group, name=f"{conv.name}_ungroup")(y)
    return y, out_depth


# Layers that act on each element (or along the channel axis only), so they give the same
# result on the folded (N·Do, Ho, Wo, F) layout as on (N, Do, Ho, Wo, F).
_ELEMENTWISE = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Maximum,
    keras.layers.Minimum,
    keras.layers.Average,
    keras.layers.ReLU,
    keras.layers.Activation,
)


class _Tensors:
    """New tensors by ``id`` of the original Keras tensor; folded ones carry their depth.

    A Conv2D's output stays folded through elementwise layers (a residual Add, its ReLU) and is
    reshaped back to 5D once, where a layer needs the depth axis. Why: with a RESHAPE between
    a convolution and an ADD, the converter moves the RESHAPE past the ADD and loses the
    convolution's calibrated output range, which left the ResNet's projection conv in float32.
    """

    def __init__(self) -> None:
        self._new: dict[int, tuple[Any, int | None, str]] = {}
        self._unfolded: dict[int, Any] = {}

    def set(self, old: Any, new: Any, depth: int | None = None, producer: str = "") -> None:
        self._new[id(old)] = (new, depth, producer)

    def alias(self, old: Any, same_as: Any) -> None:
        self._new[id(old)] = self._new[id(same_as)]

    def has(self, old: Any) -> bool:
        return id(old) in self._new

    def depth(self, old: Any) -> int | None:
        return self._new[id(old)][1]

    def folded(self, old: Any) -> Any:
        return self._new[id(old)][0]

    def unfolded(self, old: Any) -> Any:
        new, depth, producer = self._new[id(old)]
        if depth is None:
            return new
        if id(old) not in self._unfolded:
            self._unfolded[id(old)] = DepthUntaps(depth, name=f"{producer}_untaps")(new)
        return self._unfolded[id(old)]


def _stays_folded(layer: keras.layers.Layer, node: Any, tensors: _Tensors) -> int | None:
    """The common depth if ``layer`` can run on its folded inputs, else None."""
    if not isinstance(layer, _ELEMENTWISE):
        return None
    inputs = node.keras_inputs
    depths = {tensors.depth(t) for t in inputs}
    shapes = {tuple(t.shape[1:]) for t in inputs}
    if len(depths) != 1 or None in depths or len(shapes) != 1:
        return None  # broadcasting between shapes would differ between the layouts
    return depths.pop()


def _clone_call(layer: keras.layers.Layer, args: Any, kwargs: Any) -> Any:
    new = layer.__class__.from_config(layer.get_config())
    out = new(*args, **kwargs)
    new.set_weights(layer.get_weights())
    new.trainable = layer.trainable
    return out


def rewrite_conv3d(model: keras.Model, *, group_width: int = 64) -> tuple[keras.Model, str | None]:
    """An equivalent model whose Conv3D layers are Conv2D over depth-shifted views.

    Args:
        model: A functional tf-keras model (not modified). Conv3D layers must be
            ``channels_last``, undilated and ungrouped to be rewritten (others are kept and
            listed in the note).
        group_width: Most Conv2D filters a few-channel Conv3D may grow to when it computes
            several output depths per row (:func:`_depth_group`); 0 turns that off.

    Returns:
        ``(model, note)``: the rewritten model (layer names kept for the convolutions; folded
        BatchNorm and ReLU layers disappear) and a one-line note, or the original model and
        None when it has no Conv3D.

    Raises:
        ValueError: The model nests another model, or calls a layer more than once.
    """
    nodes = _nodes(model)
    if not any(isinstance(n.layer, keras.layers.Conv3D) for n in nodes):
        return model, None
    nested = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
    if nested:
        raise ValueError(f"rewrite_conv3d needs a flat model; {model.name!r} nests {nested}")
    calls: dict[str, int] = {}
    for node in nodes:
        calls[node.layer.name] = calls.get(node.layer.name, 0) + 1
    shared = sorted(name for name, count in calls.items() if count > 1)
    if shared:
        raise ValueError(f"rewrite_conv3d cannot rewrite layers called more than once: {shared}")

    readers = _consumers(nodes)
    outputs = {id(t) for t in tf.nest.flatten(model.outputs)}
    tensors = _Tensors()
    skip: set[int] = set()  # ids of BatchNorm/ReLU nodes folded into the conv before them
    rewritten, folded, kept = [], [], []
    for node in nodes:
        layer = node.layer
        out = tf.nest.flatten(node.outputs)[0]  # single-output layers, except in the clone
        if isinstance(layer, keras.layers.InputLayer):
            cfg = layer.get_config()
            tensors.set(
                out,
                keras.Input(
                    batch_shape=cfg["batch_input_shape"], dtype=cfg["dtype"], name=layer.name
                ),
            )
            continue
        if id(node) in skip:
            tensors.alias(out, node.keras_inputs[0])
            continue
        if isinstance(layer, keras.layers.Conv3D) and _rewritable(layer) is None:
            bn, relu = _fusion(node, readers, outputs)
            y, depth = _conv3d_as_2d(
                tensors.unfolded(node.keras_inputs[0]),
                layer,
                bn.layer if bn else None,
                relu is not None,
                group_width,
            )
            tensors.set(out, y, depth, layer.name)
            skip.update(id(e) for e in (bn, relu) if e is not None)
            rewritten.append(layer.name)
            folded += [e.layer.name for e in (bn, relu) if e is not None]
            continue
        if isinstance(layer, keras.layers.Conv3D):
            kept.append(f"{layer.name} ({_rewritable(layer)})")
        depth = _stays_folded(layer, node, tensors)
        pick = tensors.folded if depth is not None else tensors.unfolded

        def swap(t: Any, pick: Any = pick) -> Any:
            return pick(t) if tensors.has(t) else t

        args = tf.nest.map_structure(swap, node.call_args)
        kwargs = tf.nest.map_structure(swap, node.call_kwargs)
        result = _clone_call(layer, args, kwargs)
        for old, new in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(result), strict=True):
            tensors.set(old, new, depth, layer.name)
    new_inputs = [tensors.unfolded(t) for t in model.inputs]
    new_outputs = [tensors.unfolded(t) for t in model.outputs]
    result = keras.Model(
        new_inputs if len(new_inputs) > 1 else new_inputs[0],
        new_outputs if len(new_outputs) > 1 else new_outputs[0],
        name=model.name,
    )
    note = (
        f"{len(rewritten)} Conv3D layer(s) rewritten as Conv2D over depth-shifted views before "
        "conversion (an exact rewrite; TFLite has no integer CONV_3D)"
    )
    if folded:
        note += f"; merged into their Conv2D: {', '.join(folded)}"
    if kept:
        note += f"; kept as Conv3D (float32): {', '.join(kept)}"
    return result, note
