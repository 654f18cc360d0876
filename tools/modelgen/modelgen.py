#!/usr/bin/env python3
"""modelgen builds Starling's small test models and their reference outputs.

Every model but the pretrained ones is built from fixed-seed weights and
converted with the official TensorFlow Lite converter; the pretrained ones are
taken unchanged from pinned PyPI wheels (fetched with pip download and checked
against their SHA-256; see pretrained_builder). Each is run with the official
interpreter (tf.lite.Interpreter) on fixed inputs. For each model NAME it writes

    OUT/NAME/model.tflite
    OUT/NAME/reference.json

so that the Go engines' conformance tests can compare against the official
interpreter without Python. The reference.json format is documented in
testdata/models/README.md.

Usage:
    python tools/modelgen/modelgen.py --out testdata/models [--only demo,...]
    python tools/modelgen/modelgen.py --list
    python tools/modelgen/modelgen.py --out /tmp/bench --only mobilenet_v2_1.0_224

Models marked benchmark-only in --list (full-size networks) are built only
when named with --only, never into testdata.

Outputs are deterministic: running it twice writes byte-identical files.
"""

import argparse
import json
import os
import sys

# Quiet TensorFlow and make its CPU kernels deterministic before importing it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")

import warnings  # noqa: E402

warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# OIP (KServe Open Inference Protocol v2) datatype names, as used by
# shared/tensor.DType.
OIP_DTYPES = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float16): "FP16",
    np.dtype(np.float64): "FP64",
    np.dtype(np.int8): "INT8",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.int16): "INT16",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.bool_): "BOOL",
}

MODELS = {}

# Models too large to commit: built only when named with --only (the
# benchmarks generate them into a temporary folder).
BENCH_ONLY = set()


def model(name):
    """Registers a builder. A builder returns (tflite_bytes, [input_dict, ...])
    where each input_dict maps a signature input name to a numpy array, and
    optionally a third element, {file_name: bytes}, of further files to write
    next to the model (a pretrained model's licence)."""

    def register(fn):
        MODELS[name] = fn
        return fn

    return register


def seeded(seed):
    """Returns a numpy Generator and seeds TensorFlow's and Python's RNGs.

    Keras' session is cleared first so that layer names (which the converter
    writes into the model) do not depend on which models were built before
    in the same process: --only and a full run write identical files."""
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(seed)
    return np.random.default_rng(seed)


def convert_concrete(module, fn, configure=None):
    """Converts a tf.function (with an input_signature) held by module."""
    conv = tf.lite.TFLiteConverter.from_concrete_functions(
        [fn.get_concrete_function()], module
    )
    if configure is not None:
        configure(conv)
    return conv.convert()


# ---------------------------------------------------------------------------
# Models


@model("demo")
def build_demo():
    """A small dense sensor classifier: 8 features -> 3 class probabilities.

    Built from raw TF ops so that the converted graph keeps separate
    FULLY_CONNECTED (with and without fused ReLU and bias), ADD (including a
    broadcast add), RESHAPE, RELU and SOFTMAX operators.
    """
    rng = seeded(1)

    def w(*shape, scale=0.5):
        return tf.constant(rng.normal(0.0, scale, shape).astype(np.float32))

    w1, b1 = w(8, 16), w(16, scale=0.1)
    w_skip = w(8, 16)
    bias3d = w(4, scale=0.1)  # broadcast over [1, 4, 4]
    w2, b2 = w(16, 3), w(3, scale=0.1)

    class Demo(tf.Module):
        @tf.function(
            input_signature=[tf.TensorSpec([1, 8], tf.float32, name="input")]
        )
        def serve(self, x):
            h = tf.nn.relu(tf.matmul(x, w1) + b1)  # FULLY_CONNECTED + ReLU
            r = tf.matmul(tf.nn.relu(x), w_skip)  # RELU, FULLY_CONNECTED without bias
            s = tf.reshape(h + r, [1, 4, 4])  # ADD, RESHAPE
            s = s + bias3d  # broadcasting ADD
            s = tf.reshape(s, [1, 16])  # RESHAPE
            logits = tf.matmul(s, w2) + b2  # FULLY_CONNECTED
            return {"probabilities": tf.nn.softmax(logits)}  # SOFTMAX

    m = Demo()
    tfl = convert_concrete(m, m.serve)
    cases = [{"input": rng.normal(0.0, 1.0, (1, 8)).astype(np.float32)} for _ in range(5)]
    cases.append({"input": np.zeros((1, 8), np.float32)})
    cases.append({"input": np.full((1, 8), 4.0, np.float32)})
    return tfl, cases


# ---------------------------------------------------------------------------
# Pretrained models shipped inside PyPI wheels. The wheel is fetched with
# `pip download` into a temporary folder at generation time and checked
# against its pinned SHA-256, so the extracted model is the same bytes every
# time; the package's licence file is written next to the model.

MEDIAPIPE_WHEEL = {
    "requirement": "mediapipe==0.10.14",
    "file": "mediapipe-0.10.14-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "sha256": "a807328339e7356fda0bb14df12fedbf1d33bdf81649c5f8666b0026b1cc30b4",
    "pip_args": ["--only-binary=:all:", "--platform", "manylinux_2_17_x86_64",
                 "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"],
    "license": "mediapipe-0.10.14.dist-info/LICENSE",
}


def wheel_files(wheel, members):
    """Downloads the pinned wheel (no dependencies) and returns the bytes of
    the named members."""
    import hashlib  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import tempfile  # noqa: PLC0415
    import zipfile  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="modelgen-wheel-") as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", tmp]
            + wheel["pip_args"] + [wheel["requirement"]],
            check=True,
        )
        path = os.path.join(tmp, wheel["file"])
        if not os.path.exists(path):
            raise SystemExit(f"modelgen: pip download {wheel['requirement']} did not fetch {wheel['file']}: {os.listdir(tmp)}")
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        if digest != wheel["sha256"]:
            raise SystemExit(f"modelgen: {wheel['file']} has sha256 {digest}, want {wheel['sha256']}")
        with zipfile.ZipFile(path) as z:
            return {m: z.read(m) for m in members}


def pretrained_builder(name, wheel, member, seed, cases, cells, size):
    """Registers a model taken unchanged from a pinned wheel. Its inputs are
    blocky images (cells x cells flat squares, values on a 1/4 grid in
    [-1, 1]: the models' normalised pixel range), short in JSON."""

    @model(name)
    def build():
        rng = seeded(seed)
        files = wheel_files(wheel, [member, wheel["license"]])
        block = size // cells
        xs = [
            np.kron(
                (np.round(rng.uniform(-1.0, 1.0, (1, cells, cells, 3)) * 4) / 4).astype(np.float32),
                np.ones((1, block, block, 1), np.float32),
            )
            for _ in range(cases)
        ]
        return files[member], [{"input": x} for x in xs], {"LICENSE": files[wheel["license"]]}

    return build


# MediaPipe's BlazeFace short-range face detector: 128x128 RGB in [-1, 1] ->
# 896 anchors' box regressors and face logits. Float32 activations with
# float16 weights (DEQUANTIZE operators feeding the convolutions).
pretrained_builder(
    "mediapipe_face_detection_short_range",
    MEDIAPIPE_WHEEL,
    "mediapipe/modules/face_detection/face_detection_short_range.tflite",
    seed=41,
    cases=2,
    cells=8,
    size=128,
)

# MediaPipe Holistic's hand re-crop model: 256x256 RGB in [-1, 1] -> a crop
# box [1,1,1,4]. Float32 throughout, with PReLU activations.
pretrained_builder(
    "mediapipe_hand_recrop",
    MEDIAPIPE_WHEEL,
    "mediapipe/modules/holistic_landmark/hand_recrop.tflite",
    seed=42,
    cases=1,
    cells=8,
    size=256,
)


# ---------------------------------------------------------------------------
# Small-but-real model families (Keras layers, random initialised weights).
# Each is a scaled-down member of a family edge devices run, with the same
# layer structure (and so the same TFLite operators) as the full-size model;
# inputs are kept small so that testdata stays small.


def keras_layers():
    import keras  # noqa: PLC0415 (imported late: only the families need it)

    return keras, keras.layers


def bn(x):
    """BatchNormalization with non-trivial statistics, so that the converter's
    folding into the preceding convolution is exercised."""
    keras, L = keras_layers()
    return L.BatchNormalization(
        beta_initializer="random_normal",
        gamma_initializer=keras.initializers.RandomUniform(0.5, 1.5),
        moving_mean_initializer="random_normal",
        moving_variance_initializer=keras.initializers.RandomUniform(0.5, 1.5),
    )(x)


def conv_bn(x, filters, kernel=3, strides=1, act="relu6"):
    _, L = keras_layers()
    x = L.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False)(x)
    x = bn(x)
    return activation(x, act)


def activation(x, act):
    _, L = keras_layers()
    if act == "relu6":
        return L.ReLU(6.0)(x)
    if act == "relu":
        return L.ReLU()(x)
    if act == "hard_swish":
        return L.Activation("hard_swish")(x)
    if act is None:
        return x
    raise ValueError(act)


def depthwise_bn(x, kernel=3, strides=1, act="relu6"):
    _, L = keras_layers()
    if strides == 2:
        # As Keras' MobileNets do: explicit padding, then a valid convolution.
        x = L.ZeroPadding2D(((kernel // 2 - 1 + kernel % 2, kernel // 2), (kernel // 2 - 1 + kernel % 2, kernel // 2)))(x)
        x = L.DepthwiseConv2D(kernel, strides=2, padding="valid", use_bias=False)(x)
    else:
        x = L.DepthwiseConv2D(kernel, padding="same", use_bias=False)(x)
    x = bn(x)
    return activation(x, act)


def squeeze_excite(x, channels):
    _, L = keras_layers()
    s = L.GlobalAveragePooling2D(keepdims=True)(x)
    s = L.Conv2D(max(channels // 4, 4), 1, activation="relu")(s)
    s = L.Conv2D(channels, 1)(s)
    s = L.Activation("hard_sigmoid")(s)
    return L.Multiply()([x, s])


def inverted_residual(x, expansion, out, kernel=3, strides=1, act="relu6", se=False):
    _, L = keras_layers()
    cin = x.shape[-1]
    h = x
    if expansion != 1:
        h = conv_bn(h, cin * expansion, kernel=1, act=act)
    h = depthwise_bn(h, kernel=kernel, strides=strides, act=act)
    if se:
        h = squeeze_excite(h, h.shape[-1])
    h = conv_bn(h, out, kernel=1, act=None)
    if strides == 1 and cin == out:
        h = L.Add()([x, h])
    return h


def classifier_head(x, classes=10, dense=True):
    keras, L = keras_layers()
    x = L.GlobalAveragePooling2D()(x)
    return L.Dense(classes, activation="softmax")(x)


def image_input(size=32, channels=3):
    keras, _ = keras_layers()
    return keras.Input((size, size, channels), batch_size=1)


def mobilenet_v1():
    keras, L = keras_layers()
    inp = image_input()
    x = conv_bn(inp, 8, strides=2)
    for ch, st in [(16, 1), (32, 2), (32, 1), (48, 2)]:
        x = depthwise_bn(x, strides=st)
        x = conv_bn(x, ch, kernel=1)
    x = L.GlobalAveragePooling2D(keepdims=True)(x)
    x = L.Conv2D(10, 1)(x)
    x = L.Reshape((10,))(x)
    x = L.Softmax()(x)
    return keras.Model(inp, x)


def mobilenet_v2():
    keras, _ = keras_layers()
    inp = image_input()
    x = conv_bn(inp, 8, strides=2)
    for t, c, st in [(1, 8, 1), (4, 12, 2), (4, 12, 1), (4, 16, 2), (4, 16, 1)]:
        x = inverted_residual(x, t, c, strides=st)
    x = conv_bn(x, 64, kernel=1)
    return keras.Model(inp, classifier_head(x))


def mobilenet_v3():
    keras, L = keras_layers()
    inp = image_input()
    x = conv_bn(inp, 8, strides=2, act="hard_swish")
    x = inverted_residual(x, 1, 8, strides=2, act="relu", se=True)
    x = inverted_residual(x, 3, 12, act="relu")
    x = inverted_residual(x, 3, 16, kernel=5, strides=2, act="hard_swish", se=True)
    x = inverted_residual(x, 3, 16, kernel=5, act="hard_swish", se=True)
    x = conv_bn(x, 48, kernel=1, act="hard_swish")
    x = L.GlobalAveragePooling2D(keepdims=True)(x)
    x = L.Conv2D(32, 1)(x)
    x = activation(x, "hard_swish")
    x = L.Flatten()(x)
    x = L.Dense(10, activation="softmax")(x)
    return keras.Model(inp, x)


def efficientnet_lite0():
    keras, _ = keras_layers()
    inp = image_input()
    x = conv_bn(inp, 8, strides=2)
    for t, c, k, st in [(1, 8, 3, 1), (4, 12, 3, 2), (4, 12, 3, 1), (4, 16, 5, 2), (4, 16, 5, 1), (4, 24, 3, 1)]:
        x = inverted_residual(x, t, c, kernel=k, strides=st)
    x = conv_bn(x, 64, kernel=1)
    return keras.Model(inp, classifier_head(x))


def ds_cnn():
    """DS-CNN keyword spotting (Zhang et al., "Hello Edge"): 49 MFCC frames
    of 10 coefficients -> 12 classes."""
    keras, L = keras_layers()
    inp = keras.Input((49, 10, 1), batch_size=1)
    x = L.Conv2D(16, (10, 4), strides=(2, 2), padding="same", use_bias=False)(inp)
    x = activation(bn(x), "relu")
    for _ in range(2):
        x = depthwise_bn(x, act="relu")
        x = conv_bn(x, 16, kernel=1, act="relu")
    x = L.AveragePooling2D(pool_size=(25, 5))(x)
    x = L.Flatten()(x)
    x = L.Dense(12, activation="softmax")(x)
    return keras.Model(inp, x)


def pool_concat():
    """Operator coverage the families above leave out: MAX_POOL_2D,
    AVERAGE_POOL_2D with SAME padding, CONCATENATION, PAD, MEAN without
    keep_dims, SUB and LOGISTIC."""
    keras, L = keras_layers()
    inp = image_input(16, 4)
    x = conv_bn(inp, 8, kernel=1)
    a = L.MaxPooling2D(3, strides=2, padding="same")(x)
    b = L.AveragePooling2D(3, strides=2, padding="same")(x)
    c = L.MaxPooling2D(2)(x)
    x = L.Concatenate()([a, b, c])
    x = L.ZeroPadding2D(((1, 2), (2, 1)))(x)
    x = L.Conv2D(12, 3, padding="valid")(x)
    x = L.Subtract()([x, L.Activation("sigmoid")(x)])
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(6, activation="sigmoid")(x)
    return keras.Model(inp, x)


def autoencoder():
    """A dense autoencoder for sensor anomaly detection: 32 -> 8 -> 32."""
    keras, L = keras_layers()
    inp = keras.Input((32,), batch_size=1)
    x = L.Dense(16, activation="relu")(inp)
    x = L.Dense(8, activation="relu")(x)
    x = L.Dense(16, activation="relu")(x)
    x = L.Dense(32, activation="sigmoid")(x)
    return keras.Model(inp, x)


def keras_to_tflite(model, in_shape, out_name, quant=None, rep=None):
    """Freezes a Keras model into a signature with one input "input" and one
    output out_name, and converts it. quant selects full-integer
    quantization: "uint8" (the legacy TF1 full-uint8 scheme),
    "int8" (per-channel weights, int8 input and output),
    "int8-per-tensor" (per-tensor weights), "uint8-io" (int8 inside, uint8
    input and output) or "float-io" (int8 inside, float input and output)."""
    from tensorflow.python.framework.convert_to_constants import (  # noqa: PLC0415
        convert_variables_to_constants_v2,
    )

    class Wrapped(tf.Module):
        def __init__(self, m):
            self.m = m

        @tf.function(input_signature=[tf.TensorSpec(in_shape, tf.float32, name="input")])
        def serve(self, x):
            return {out_name: self.m(x, training=False)}

    wrapped = Wrapped(model)
    frozen = convert_variables_to_constants_v2(wrapped.serve.get_concrete_function())

    class Frozen(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec(in_shape, tf.float32, name="input")])
        def serve(self, x):
            return {out_name: frozen(x)[0]}

    f = Frozen()
    if quant == "uint8":
        return legacy_uint8(f, rep)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.serve.get_concrete_function()], f)
    if quant is not None:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ({"input": x} for x in rep)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if quant in ("int8", "int8-per-tensor"):
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        elif quant == "uint8-io":
            conv.inference_input_type = tf.uint8
            conv.inference_output_type = tf.uint8
        elif quant != "float-io":
            raise ValueError(quant)
        if quant == "int8-per-tensor":
            conv._experimental_disable_per_channel = True
    return conv.convert()


def legacy_uint8(frozen_module, rep, allow_custom_ops=False):
    """Converts with the TF1 converter's full-uint8 inference type, the
    scheme of older quantized models (asymmetric uint8 weights and
    activations). Activation ranges come from the converter's default range
    (-8, 8); the input is quantized from its observed range."""
    import tempfile  # noqa: PLC0415

    lo = min(float(x.min()) for x in rep)
    hi = max(float(x.max()) for x in rep)
    # real = (q - mean) / std, with q in [0, 255].
    std = 255.0 / (hi - lo)
    mean = -lo * std
    with tempfile.TemporaryDirectory() as d:
        tf.saved_model.save(
            frozen_module, d, signatures={"serving_default": frozen_module.serve.get_concrete_function()}
        )
        conv = tf.compat.v1.lite.TFLiteConverter.from_saved_model(d)
        conv.inference_type = tf.uint8
        conv.quantized_input_stats = {"serving_default_input": (mean, std)}
        conv.default_ranges_stats = (-8.0, 8.0)
        conv.allow_custom_ops = allow_custom_ops
        return conv.convert()


def grid_inputs(rng, shape, n, lo=-1.0, hi=1.0):
    """n float inputs on a 1/64 grid: exact in float32 and short in JSON."""
    return [(np.round(rng.uniform(lo, hi, shape) * 64) / 64).astype(np.float32) for _ in range(n)]


def quantize_input(tfl, x):
    """Quantizes a float input with the model's input quantization."""
    d = tf.lite.Interpreter(model_content=tfl).get_input_details()[0]
    if d["dtype"] == np.float32:
        return x
    scale, zero = d["quantization"]
    info = np.iinfo(d["dtype"])
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(d["dtype"])


def family(name, build, in_shape, out_name, seed, cases=3, quant=None, lo=-1.0, hi=1.0):
    """Registers a model family variant."""

    @model(name)
    def builder():
        rng = seeded(seed)
        m = build()
        rep = grid_inputs(rng, in_shape, 16, lo, hi)
        tfl = keras_to_tflite(m, in_shape, out_name, quant=quant, rep=rep)
        xs = grid_inputs(rng, in_shape, cases, lo, hi)
        return tfl, [{"input": quantize_input(tfl, x)} for x in xs]

    return builder


IMG = [1, 32, 32, 3]
KWS = [1, 49, 10, 1]
for fam_name, fam_build, fam_shape, fam_out, fam_seed in [
    ("mobilenet_v1", mobilenet_v1, IMG, "probabilities", 11),
    ("mobilenet_v2", mobilenet_v2, IMG, "probabilities", 12),
    ("mobilenet_v3", mobilenet_v3, IMG, "probabilities", 13),
    ("efficientnet_lite0", efficientnet_lite0, IMG, "probabilities", 14),
    ("ds_cnn", ds_cnn, KWS, "probabilities", 15),
    ("pool_concat", pool_concat, [1, 16, 16, 4], "scores", 16),
    ("autoencoder", autoencoder, [1, 32], "reconstruction", 17),
]:
    fam_cases = 2 if fam_shape == IMG else 4
    family(fam_name, fam_build, fam_shape, fam_out, fam_seed, cases=fam_cases)
    # Full-integer int8 (per-channel weights, int8 input and output).
    family(fam_name + "_int8", fam_build, fam_shape, fam_out, fam_seed, cases=fam_cases, quant="int8")

def mobilenet_v2_224():
    """Full-size MobileNet v2 1.0 224 (Keras' layout, random weights)."""
    keras, _ = keras_layers()
    return keras.applications.MobileNetV2(
        input_shape=(224, 224, 3), alpha=1.0, weights=None, classes=1000, classifier_activation="softmax"
    )


family("mobilenet_v2_1.0_224", mobilenet_v2_224, [1, 224, 224, 3], "probabilities", 21, cases=1)
family("mobilenet_v2_1.0_224_int8", mobilenet_v2_224, [1, 224, 224, 3], "probabilities", 21, cases=1, quant="int8")
BENCH_ONLY.update({"mobilenet_v2_1.0_224", "mobilenet_v2_1.0_224_int8"})

# Other quantization schemes, on one family each.
family("mobilenet_v1_uint8", mobilenet_v1, IMG, "probabilities", 11, cases=2, quant="uint8")
family("ds_cnn_uint8", ds_cnn, KWS, "probabilities", 15, cases=4, quant="uint8")
family("mobilenet_v2_int8_per_tensor", mobilenet_v2, IMG, "probabilities", 12, cases=2, quant="int8-per-tensor")
family("ds_cnn_uint8_io", ds_cnn, KWS, "probabilities", 15, cases=4, quant="uint8-io")
family("autoencoder_float_io", autoencoder, [1, 32], "reconstruction", 17, cases=4, quant="float-io")


# ---------------------------------------------------------------------------
# Operator coverage for segmentation, pose and YOLO-style heads: resizing,
# slicing, transposing, splitting and gathering.


def op_coverage_module():
    """A tf.Module whose graph converts to RESIZE_BILINEAR (half-pixel and
    align-corners), RESIZE_NEAREST_NEIGHBOR (half-pixel and align-corners),
    TRANSPOSE, STRIDED_SLICE (masks, negative and >1 strides), SPLIT and
    GATHER, with convolutions around them so that the int8 variant
    quantizes every tensor."""
    rng = np.random.default_rng(41)

    def w(*shape):
        return tf.constant(rng.normal(0.0, 0.5, shape).astype(np.float32))

    k1, k2 = w(3, 3, 4, 8), w(1, 1, 8, 6)
    shape = [1, 8, 8, 4]

    class Ops(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name="input")])
        def serve(self, x):
            h = tf.nn.relu(tf.nn.conv2d(x, k1, 1, "SAME"))  # [1,8,8,8]
            up = tf.image.resize(h, [13, 16], method="bilinear")  # half-pixel centers
            up_ac = tf.compat.v1.image.resize_bilinear(h, [15, 11], align_corners=True)
            nn = tf.image.resize(h, [16, 12], method="nearest")
            nn_ac = tf.compat.v1.image.resize_nearest_neighbor(h, [11, 14], align_corners=True)
            t = tf.transpose(up, [0, 3, 1, 2])  # [1,8,13,16]
            sl = t[:, 1:7:2, ::-3, 2:-1]  # [1,3,5,13]
            sl2 = up_ac[0, 3, :, 1:5]  # shrink axes: [11,4]
            a, b = tf.split(nn, 2, axis=3)  # [1,16,12,4] x 2
            g = tf.gather(nn_ac, [5, 0, 3, 3, 7], axis=3)  # [1,11,14,5]
            g2 = tf.gather(h, [6, 1, 2], axis=1)  # [1,3,8,8]
            y = tf.nn.conv2d(a - b, k2[:, :, :4, :], 1, "VALID")
            return {
                "transpose_slice": sl,
                "shrink_slice": sl2,
                "split_sub_conv": y,
                "gather_channels": g,
                "gather_rows": g2,
            }

    return Ops(), shape


def op_coverage2_module(depth_to_space=True):
    """A second coverage graph: SPLIT_V, SLICE, DEPTH_TO_SPACE,
    SPACE_TO_DEPTH and UNPACK (YOLO heads split boxes from classes unevenly;
    YOLOv5's stem and super-resolution models move space to depth and back).
    TFLite's reference kernels lack int8 DEPTH_TO_SPACE (version 2), so the
    int8 variant leaves it out."""
    rng = np.random.default_rng(43)
    k1 = tf.constant(rng.normal(0.0, 0.5, (3, 3, 4, 12)).astype(np.float32))
    shape = [1, 8, 8, 4]

    class Ops(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name="input")])
        def serve(self, x):
            h = tf.nn.relu(tf.nn.conv2d(x, k1, 1, "SAME"))  # [1,8,8,12]
            a, b, c = tf.split(h, [2, 7, 3], axis=3)  # SPLIT_V
            s = tf.slice(h, [0, 1, 2, 3], [1, 5, -1, 6])  # SLICE
            s2d = tf.nn.space_to_depth(x, 2)  # [1,4,4,16]
            u0, u1, u2, u3 = tf.unstack(s2d, axis=1)  # UNPACK: 4 x [1,4,16]
            out = {
                "split_v": b - tf.concat([a, c, a], axis=3),
                "slice": s,
                "unpack": u2 - u0,
                "unpack_last": u3 + u1,
            }
            if depth_to_space:
                out["depth_to_space"] = tf.nn.depth_to_space(h, 2)  # [1,16,16,3]
            return out

    return Ops(), shape


def op_coverage_builder(name, module=op_coverage_module, quant=None):
    @model(name)
    def builder():
        rng = seeded(41)
        m, shape = module()
        conv = tf.lite.TFLiteConverter.from_concrete_functions([m.serve.get_concrete_function()], m)
        if quant == "int8":
            rep = grid_inputs(rng, shape, 16)
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: ({"input": x} for x in rep)
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        tfl = conv.convert()
        xs = grid_inputs(np.random.default_rng(42), shape, 3)
        return tfl, [{"input": quantize_input(tfl, x)} for x in xs]

    return builder


op_coverage_builder("op_coverage")
op_coverage_builder("op_coverage_int8", quant="int8")
op_coverage_builder("op_coverage2", op_coverage2_module)
op_coverage_builder("op_coverage2_int8", lambda: op_coverage2_module(depth_to_space=False), quant="int8")


# ---------------------------------------------------------------------------
# SSD-MobileNet v2 detection with the TFLite_Detection_PostProcess custom op.
#
# The TF Object Detection API's TF2 TFLite export (export_tflite_graph_lib_tf2)
# ends the graph with an empty tf.function whose experimental_implements
# attribute names "TFLite_Detection_PostProcess" and lists the op's
# attributes as NameAttrList text; the converter fuses the function into the
# custom op (allow_custom_ops=True) and writes the attributes as its
# FlexBuffer custom options. This builder does the same on a small
# MobileNet v2 backbone with two SSDLite feature maps.

SSD_SIZE = 96  # input 96x96x3
SSD_CLASSES = 3  # plus background
SSD_ANCHORS_PER_CELL = 3


def ssd_postprocess_attrs(max_detections=20, max_classes_per_detection=1, detections_per_class=5,
                          regular_nms=False, score_threshold=0.5, iou_threshold=0.5):
    """The experimental_implements string, in the TF2 exporter's format."""
    return " ".join(
        [
            'name: "TFLite_Detection_PostProcess"',
            'attr { key: "max_detections" value { i: %d } }' % max_detections,
            'attr { key: "max_classes_per_detection" value { i: %d } }' % max_classes_per_detection,
            'attr { key: "detections_per_class" value { i: %d } }' % detections_per_class,
            'attr { key: "use_regular_nms" value { b: %s } }' % str(regular_nms).lower(),
            'attr { key: "nms_score_threshold" value { f: %f } }' % score_threshold,
            'attr { key: "nms_iou_threshold" value { f: %f } }' % iou_threshold,
            'attr { key: "y_scale" value { f: %f } }' % 10.0,
            'attr { key: "x_scale" value { f: %f } }' % 10.0,
            'attr { key: "h_scale" value { f: %f } }' % 5.0,
            'attr { key: "w_scale" value { f: %f } }' % 5.0,
            'attr { key: "num_classes" value { i: %d } }' % SSD_CLASSES,
        ]
    )


def ssd_anchors(grids):
    """SSD anchors in the op's center-size layout [ycenter, xcenter, h, w],
    normalised to the image: per cell, a square anchor and two of aspect
    ratio 2 and 1/2, scales growing with the feature map's stride."""
    out = []
    for k, g in enumerate(grids):
        scale = 0.2 + 0.3 * k
        for y in range(g):
            for x in range(g):
                for ar in (1.0, 2.0, 0.5):
                    out.append([(y + 0.5) / g, (x + 0.5) / g, scale / np.sqrt(ar), scale * np.sqrt(ar)])
    return np.asarray(out, np.float32)


def ssd_mobilenet_v2_heads():
    """The backbone and SSDLite box predictor as a Keras model: image ->
    (box encodings [1, A, 4], class logits [1, A, classes + 1])."""
    keras, L = keras_layers()
    inp = image_input(SSD_SIZE)
    x = conv_bn(inp, 8, strides=2)  # 48
    for t, c, st in [(1, 8, 1), (4, 12, 2), (4, 12, 1), (4, 16, 2), (4, 16, 1), (4, 24, 2)]:
        x = inverted_residual(x, t, c, strides=st)  # 6x6 after the last
    f1 = x
    f2 = inverted_residual(f1, 4, 32, strides=2)  # 3x3
    boxes, classes = [], []
    for f in (f1, f2):
        g = f.shape[1]
        h = depthwise_bn(f)
        # Initialised so that (untrained) scores spread over (0, 1) and
        # boxes move off their anchors: NMS and the score threshold both
        # have work to do.
        b = L.Conv2D(SSD_ANCHORS_PER_CELL * 4, 1, kernel_initializer=keras.initializers.RandomNormal(0.0, 0.2))(h)
        c = L.Conv2D(
            SSD_ANCHORS_PER_CELL * (SSD_CLASSES + 1),
            1,
            kernel_initializer=keras.initializers.RandomNormal(0.0, 0.3),
            bias_initializer=keras.initializers.RandomNormal(-1.0, 0.5),
        )(h)
        boxes.append(L.Reshape((g * g * SSD_ANCHORS_PER_CELL, 4))(b))
        classes.append(L.Reshape((g * g * SSD_ANCHORS_PER_CELL, SSD_CLASSES + 1))(c))
    return keras.Model(inp, [L.Concatenate(axis=1)(boxes), L.Concatenate(axis=1)(classes)]), [6, 3]


def calibrate_batchnorm(m, xs):
    """Sets every BatchNormalization layer's moving statistics to those of
    its input on xs, in order, as training would: untrained random
    statistics let the input's contribution fade within a few blocks, and a
    detector whose scores ignore the image would make a weak test."""
    keras, L = keras_layers()
    batch = np.concatenate(xs)
    for layer in m.layers:
        if isinstance(layer, L.BatchNormalization):
            a = keras.Model(m.inputs, layer.input)(batch, training=False).numpy()
            layer.moving_mean.assign(a.mean(axis=(0, 1, 2)))
            layer.moving_variance.assign(a.var(axis=(0, 1, 2)) + 1e-3)


def smooth_inputs(rng, n, cells=6):
    """n images of cells x cells flat squares on the 1/64 grid: large
    structures, unlike per-pixel noise, which averages away in a deep
    network."""
    block = SSD_SIZE // cells
    return [np.kron(g, np.ones((1, block, block, 1), np.float32)) for g in grid_inputs(rng, [1, cells, cells, 3], n)]


def quantized_postprocess_inputs(tfl):
    """Feeds TFLite_Detection_PostProcess its uint8 inputs directly, as the
    TF1 exporter's quantized SSD models do (the op dequantizes box encodings,
    scores and anchors itself): removes the DEQUANTIZE operators that today's
    converter puts before it and stores the anchors as uint8. The rest of the
    model is the converter's output, unchanged."""
    import flatbuffers  # noqa: PLC0415
    from tensorflow.lite.python import schema_py_generated as schema  # noqa: PLC0415

    m = schema.ModelT.InitFromPackedBuf(tfl, 0)
    sg = m.subgraphs[0]
    codes = [oc.customCode for oc in m.operatorCodes]
    post = next(op for op in sg.operators if codes[op.opcodeIndex] == b"TFLite_Detection_PostProcess")
    producer = {int(o): op for op in sg.operators for o in op.outputs}
    dequantize = [i for i, oc in enumerate(m.operatorCodes) if oc.builtinCode == schema.BuiltinOperator.DEQUANTIZE]
    post.inputs = np.array(post.inputs, np.int32)  # writable
    drop = []
    for k in (0, 1):
        op = producer[int(post.inputs[k])]
        if op.opcodeIndex not in dequantize:
            raise SystemExit("modelgen: post-processing input %d is not a DEQUANTIZE output" % k)
        post.inputs[k] = op.inputs[0]
        drop.append(op)
    sg.operators = [op for op in sg.operators if all(op is not d for d in drop)]
    anchors = sg.tensors[post.inputs[2]]
    a = np.frombuffer(bytes(m.buffers[anchors.buffer].data), np.float32)
    lo, hi = min(float(a.min()), 0.0), float(a.max())
    scale = (hi - lo) / 255.0
    zero = int(round(-lo / scale))
    q = np.clip(np.round(a / scale) + zero, 0, 255).astype(np.uint8)
    m.buffers[anchors.buffer].data = np.frombuffer(q.tobytes(), np.uint8)
    anchors.type = schema.TensorType.UINT8
    anchors.quantization = schema.QuantizationParametersT()
    anchors.quantization.scale = [scale]
    anchors.quantization.zeroPoint = [zero]
    b = flatbuffers.Builder(len(tfl))
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def ssd_builder(name, seed, quant=None, **attrs):
    """Registers an SSD-MobileNet v2 variant; attrs go to
    ssd_postprocess_attrs. quant is None or "int8" (full-integer, int8
    input; the post-processing inputs are what the converter makes them)."""

    @model(name)
    def builder():
        from tensorflow.python.framework.convert_to_constants import (  # noqa: PLC0415
            convert_variables_to_constants_v2,
        )

        rng = seeded(seed)
        heads, grids = ssd_mobilenet_v2_heads()
        rep = smooth_inputs(rng, 16)
        calibrate_batchnorm(heads, rep)
        anchors = tf.constant(ssd_anchors(grids))
        shape = [1, SSD_SIZE, SSD_SIZE, 3]

        @tf.function(experimental_implements=ssd_postprocess_attrs(**attrs))
        def postprocess(box_encodings, class_predictions, anchors):
            # A placeholder body: the converter replaces the whole function
            # with the custom op.
            boxes = tf.constant(0.0, dtype=tf.float32, name="boxes")
            scores = tf.constant(0.0, dtype=tf.float32, name="scores")
            classes = tf.constant(0.0, dtype=tf.float32, name="classes")
            num = tf.constant(0.0, dtype=tf.float32, name="num_detections")
            return boxes, classes, scores, num

        class Heads(tf.Module):
            @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name="input")])
            def serve(self, x):
                b, c = heads(x, training=False)
                return b, c

        frozen = convert_variables_to_constants_v2(Heads().serve.get_concrete_function())

        class SSD(tf.Module):
            @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name="input")])
            def serve(self, x):
                b, c = frozen(x)
                # The SSD exporter's score conversion: sigmoid (the legacy
                # uint8 converter cannot quantize it with its default
                # ranges, so that variant scores raw logits).
                if quant != "uint8":
                    c = tf.sigmoid(c)
                b, c, s, n = postprocess(b, c, anchors)
                return {"detection_boxes": b, "detection_classes": c, "detection_scores": s, "num_detections": n}

        m = SSD()
        if quant == "uint8":
            tfl = quantized_postprocess_inputs(legacy_uint8(m, rep, allow_custom_ops=True))
            xs = smooth_inputs(rng, 3)
            return tfl, [{"input": quantize_input(tfl, x)} for x in xs]
        conv = tf.lite.TFLiteConverter.from_concrete_functions([m.serve.get_concrete_function()], m)
        conv.allow_custom_ops = True
        if quant == "int8":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: ({"input": x} for x in rep)
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.int8
        elif quant is not None:
            raise ValueError(quant)
        tfl = conv.convert()
        xs = smooth_inputs(rng, 3)
        return tfl, [{"input": quantize_input(tfl, x)} for x in xs]

    return builder


ssd_builder("ssd_mobilenet_v2", 31)
ssd_builder("ssd_mobilenet_v2_int8", 31, quant="int8")
# A high score threshold leaves fewer than max_detections: the padded tail.
ssd_builder("ssd_mobilenet_v2_regular_nms", 31, regular_nms=True, score_threshold=0.85)
# The legacy full-uint8 scheme: the custom op takes uint8 box encodings,
# scores and anchors and dequantizes them itself.
ssd_builder("ssd_mobilenet_v2_uint8", 31, quant="uint8", regular_nms=True, score_threshold=1.0)


# ---------------------------------------------------------------------------
# Batchable models: the batch dimension is None (shape signature -1), so a
# server may run several requests as one batch. Their cases include batches
# of several rows, recorded with the official interpreter resized to them.


def dense_batch_builder(name, hidden, seed):
    """Registers a dense classifier of a 1 KB float input (256 features):
    Dense layers of the given widths with ReLU, then 10 softmax classes."""

    @model(name)
    def builder():
        rng = seeded(seed)
        keras, L = keras_layers()
        inp = keras.Input((256,))
        x = inp
        for width in hidden:
            x = L.Dense(width, activation="relu")(x)
        x = L.Dense(10, activation="softmax")(x)
        tfl = keras_to_tflite(keras.Model(inp, x), [None, 256], "probabilities")
        return tfl, [{"input": grid_inputs(rng, [rows, 256], 1)[0]} for rows in (1, 1, 2, 5)]

    return builder


dense_batch_builder("dense_batch", [256], 51)
# The batching benchmark's model: 37 MB of weights, more than the caches
# hold, so one row at a time reads every weight from memory and a batch
# reads them once for all its rows.
dense_batch_builder("dense_batch_xl", [4096, 2048], 52)
BENCH_ONLY.add("dense_batch_xl")


# ---------------------------------------------------------------------------
# Reference recording


class F32:
    """A float32 JSON number written as the shortest decimal that reads back
    as the same float32."""

    def __init__(self, v):
        self.v = v


def to_json_list(a):
    """Flattens an array to JSON numbers that round-trip exactly."""
    flat = a.reshape(-1)
    if a.dtype == np.float32:
        return [F32(v) for v in flat]
    if a.dtype.kind == "f":
        return [float(v) for v in flat]
    if a.dtype.kind == "b":
        return [bool(v) for v in flat]
    return [int(v) for v in flat]


def tensor_json(name, a):
    a = np.asarray(a)
    if a.dtype not in OIP_DTYPES:
        raise SystemExit(f"modelgen: tensor {name}: no OIP datatype for {a.dtype}")
    return {
        "name": name,
        "datatype": OIP_DTYPES[a.dtype],
        "shape": [int(d) for d in a.shape],
        "data": to_json_list(a),
    }


def record(tfl, cases, reference_kernels=True):
    """Runs the official interpreter on every case and returns reference.json.

    Tensors are named by the model's SignatureDef, or by the tensor names
    when the model has none (as the TF1 converter writes them); case inputs
    are keyed "input" and mapped onto the model's single input then."""
    # The reference kernels (no XNNPACK delegate, no optimised paths) are the
    # specification gotflite is held to, int8 rounding included. (TFLite's
    # reference kernels refuse some full-size int8 models at Prepare; those
    # benchmark-only models are recorded with the optimised kernels.)
    resolver = tf.lite.experimental.OpResolverType.BUILTIN_REF
    if not reference_kernels:
        resolver = tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = tf.lite.Interpreter(model_content=tfl, num_threads=1, experimental_op_resolver_type=resolver)
    sigs = interp.get_signature_list()
    ref_cases = []
    if sigs:
        if len(sigs) != 1:
            raise SystemExit(f"modelgen: want one signature, got {sorted(sigs)}")
        runner = interp.get_signature_runner(next(iter(sigs)))
        ins = sorted(runner.get_input_details().items(), key=lambda kv: kv[1]["index"])
        outs = sorted(runner.get_output_details().items(), key=lambda kv: kv[1]["index"])
        in_names, out_names = [n for n, _ in ins], [n for n, _ in outs]
        for case in cases:
            if sorted(case) != sorted(in_names):
                raise SystemExit(f"modelgen: case inputs {sorted(case)} != signature {in_names}")
            out = runner(**case)
            ref_cases.append(
                {
                    "inputs": [tensor_json(n, case[n]) for n in in_names],
                    "outputs": [tensor_json(n, out[n]) for n in out_names],
                }
            )
        return {"model": "model.tflite", "cases": ref_cases}
    interp.allocate_tensors()
    ins, outs = interp.get_input_details(), interp.get_output_details()
    if len(ins) != 1:
        raise SystemExit(f"modelgen: a model without a signature must have one input, has {len(ins)}")
    for case in cases:
        interp.set_tensor(ins[0]["index"], case["input"])
        interp.invoke()
        ref_cases.append(
            {
                "inputs": [tensor_json(ins[0]["name"], case["input"])],
                "outputs": [tensor_json(o["name"], interp.get_tensor(o["index"])) for o in outs],
            }
        )
    return {"model": "model.tflite", "cases": ref_cases}


def dump_json(obj):
    """json.dumps that writes F32 values as their shortest float32 decimal."""
    if isinstance(obj, dict):
        return "{" + ",".join(json.dumps(k) + ":" + dump_json(v) for k, v in obj.items()) + "}"
    if isinstance(obj, list):
        return "[" + ",".join(dump_json(v) for v in obj) + "]"
    if isinstance(obj, F32):
        if not np.isfinite(obj.v):
            raise SystemExit(f"modelgen: non-finite output {obj.v}")
        return np.format_float_positional(obj.v, unique=True, trim="-") if abs(obj.v) >= 1e-4 or obj.v == 0 else np.format_float_scientific(obj.v, unique=True, trim="-")
    return json.dumps(obj)


def write_model(out_dir, name, builder):
    built = builder()
    tfl, cases = built[0], built[1]
    extra = built[2] if len(built) > 2 else {}  # further files: name -> bytes
    ref = record(tfl, cases, reference_kernels=name not in BENCH_ONLY)
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "model.tflite"), "wb") as f:
        f.write(tfl)
    with open(os.path.join(d, "reference.json"), "w") as f:
        # One case per line keeps diffs readable and the file compact.
        f.write('{"model":"model.tflite","cases":[\n')
        f.write(",\n".join(dump_json(c) for c in ref["cases"]))
        f.write("\n]}\n")
    for fname, data in sorted(extra.items()):
        with open(os.path.join(d, fname), "wb") as f:
            f.write(data)
    print(f"modelgen: {name}: {len(tfl)} bytes, {len(cases)} cases", file=sys.stderr)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="testdata/models", help="output folder (default testdata/models)")
    p.add_argument("--only", default="", help="comma-separated model names (default: all)")
    p.add_argument("--list", action="store_true", help="list model names and exit")
    args = p.parse_args(argv)
    if args.list:
        for n in MODELS:
            print(n + (" (benchmark only)" if n in BENCH_ONLY else ""))
        return 0
    names = [n for n in args.only.split(",") if n] or [n for n in MODELS if n not in BENCH_ONLY]
    for n in names:
        if n not in MODELS:
            p.error(f"unknown model {n!r}; known: {', '.join(MODELS)}")
    for n in names:
        write_model(args.out, n, MODELS[n])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
