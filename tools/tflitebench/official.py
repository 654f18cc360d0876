#!/usr/bin/env python3
"""official times the official TensorFlow Lite interpreter on one model.

The interpreter is tf.lite.Interpreter with its default delegate (XNNPACK)
and the given thread count. Only invoke() is timed. Prints one JSON object:
{"median_us": ..., "p90_us": ..., "min_us": ..., "runs": N,
"times_us": [...], "delegate": "xnnpack"}.

Usage: python tools/tflitebench/official.py --model F --threads N --runs R --warmup W
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args(argv)

    it = tf.lite.Interpreter(model_path=args.model, num_threads=args.threads)
    it.allocate_tensors()
    rng = np.random.default_rng(3)
    for d in it.get_input_details():
        if d["dtype"] == np.float32:
            x = rng.uniform(-1.0, 1.0, d["shape"]).astype(np.float32)
        else:
            info = np.iinfo(d["dtype"])
            x = rng.integers(info.min, info.max + 1, d["shape"]).astype(d["dtype"])
        it.set_tensor(d["index"], x)
    for _ in range(args.warmup):
        it.invoke()
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter_ns()
        it.invoke()
        times.append((time.perf_counter_ns() - t0) / 1000.0)
    times.sort()
    print(json.dumps({
        "median_us": times[len(times) // 2],
        "p90_us": times[int(len(times) * 0.9)],
        "min_us": times[0],
        "runs": len(times),
        "times_us": times,
        "delegate": "xnnpack (default)",
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
