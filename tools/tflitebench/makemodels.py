#!/usr/bin/env python3
"""makemodels builds the benchmark models for tools/tflitebench.

MobileNet v2 1.0 224 (tf.keras.applications, fixed-seed random weights, no
download) converted by the official TensorFlow Lite converter twice: float32,
and full-integer int8 (int8 inputs and outputs, per-channel weights) calibrated
on fixed-seed random images. The files are large (14 MB and 4 MB), so they are
made at benchmark time into a cache folder rather than committed.

Usage: python tools/tflitebench/makemodels.py --out DIR
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def build():
    tf.keras.utils.set_random_seed(7)
    return tf.keras.applications.MobileNetV2(
        input_shape=(224, 224, 3), alpha=1.0, weights=None, classes=1000
    )


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    fp = os.path.join(args.out, "mobilenet_v2_1.0_224_float.tflite")
    q = os.path.join(args.out, "mobilenet_v2_1.0_224_int8.tflite")
    if os.path.exists(fp) and os.path.exists(q):
        return 0
    model = build()

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    with open(fp, "wb") as f:
        f.write(conv.convert())

    rng = np.random.default_rng(11)

    def representative():
        for _ in range(8):
            yield [rng.uniform(-1.0, 1.0, (1, 224, 224, 3)).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    with open(q, "wb") as f:
        f.write(conv.convert())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
