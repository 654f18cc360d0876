#!/usr/bin/env python3
"""modelgen builds Starling's small test models and their reference outputs.

Every model is built from fixed-seed weights (nothing is downloaded), converted
with the official TensorFlow Lite converter, and run with the official
interpreter (tf.lite.Interpreter) on fixed inputs. For each model NAME it writes

    OUT/NAME/model.tflite
    OUT/NAME/reference.json

so that the Go engines' conformance tests can compare against the official
interpreter without Python. The reference.json format is documented in
testdata/models/README.md.

Usage:
    python tools/modelgen/modelgen.py --out testdata/models [--only demo,...]
    python tools/modelgen/modelgen.py --list

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


def model(name):
    """Registers a builder. A builder returns (tflite_bytes, [input_dict, ...])
    where each input_dict maps a signature input name to a numpy array."""

    def register(fn):
        MODELS[name] = fn
        return fn

    return register


def seeded(seed):
    """Returns a numpy Generator and seeds TensorFlow's and Python's RNGs."""
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
# Reference recording


def to_json_list(a):
    """Flattens an array to JSON numbers that round-trip exactly."""
    flat = a.reshape(-1)
    if a.dtype.kind == "f":
        # float(np.float32) is the exact value as a double; repr round-trips.
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


def signature_io(tfl):
    """Returns the model's signature key and its input and output names in
    flatbuffer order."""
    interp = tf.lite.Interpreter(model_content=tfl)
    sigs = interp.get_signature_list()
    if len(sigs) != 1:
        raise SystemExit(f"modelgen: want exactly one signature, got {sorted(sigs)}")
    key = next(iter(sigs))
    runner = interp.get_signature_runner(key)
    ins = sorted(runner.get_input_details().items(), key=lambda kv: kv[1]["index"])
    outs = sorted(runner.get_output_details().items(), key=lambda kv: kv[1]["index"])
    return key, [n for n, _ in ins], [n for n, _ in outs]


def record(tfl, cases):
    """Runs the official interpreter on every case and returns reference.json."""
    key, in_names, out_names = signature_io(tfl)
    # The reference kernels (no XNNPACK delegate, no optimised paths) are the
    # specification gotflite is held to, int8 rounding included.
    interp = tf.lite.Interpreter(
        model_content=tfl,
        num_threads=1,
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF,
    )
    runner = interp.get_signature_runner(key)
    ref_cases = []
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


def write_model(out_dir, name, builder):
    tfl, cases = builder()
    ref = record(tfl, cases)
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "model.tflite"), "wb") as f:
        f.write(tfl)
    with open(os.path.join(d, "reference.json"), "w") as f:
        # One case per line keeps diffs readable and the file compact.
        f.write('{"model":"model.tflite","cases":[\n')
        f.write(",\n".join(json.dumps(c, separators=(",", ":")) for c in ref["cases"]))
        f.write("\n]}\n")
    print(f"modelgen: {name}: {len(tfl)} bytes, {len(cases)} cases", file=sys.stderr)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="testdata/models", help="output folder (default testdata/models)")
    p.add_argument("--only", default="", help="comma-separated model names (default: all)")
    p.add_argument("--list", action="store_true", help="list model names and exit")
    args = p.parse_args(argv)
    if args.list:
        for n in MODELS:
            print(n)
        return 0
    names = [n for n in args.only.split(",") if n] or list(MODELS)
    for n in names:
        if n not in MODELS:
            p.error(f"unknown model {n!r}; known: {', '.join(MODELS)}")
    for n in names:
        write_model(args.out, n, MODELS[n])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
