"""The detector latency reference: onnxruntime's own Python API running a shipped model on the
same image, with the same preprocessing and intra-op thread count as `aegis bench detector`.
Times `session.run` alone (ours also includes preprocessing, output decoding and NMS).
Prints a JSON report; with --profile, also where a run's time goes (onnxruntime's own profiler,
summed by kind of node, with convolutions split into 1 × 1, depthwise and others)."""

import argparse
import collections
import json
import os
import re
import tempfile
import time

import numpy as np
import onnxruntime as ort


def manifest_field(text, name):
    m = re.search(rf"^\s+{name}:\s*(\S+)", text, re.M)
    return m.group(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="manifest (models/*.yaml)")
    ap.add_argument("--rgb", required=True, help="packed RGB24 at the model's input size")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--profile", action="store_true", help="also ms per run by kind of node")
    args = ap.parse_args()
    text = open(args.model).read()
    w, h = int(manifest_field(text, "width")), int(manifest_field(text, "height"))
    scale, offset = float(manifest_field(text, "scale")), float(manifest_field(text, "offset"))
    layout = manifest_field(text, "layout")
    onnx = os.path.join(os.path.dirname(args.model), re.search(r"^file:\s*(\S+)", text, re.M).group(1))
    pixels = np.fromfile(args.rgb, dtype=np.uint8).reshape(h, w, 3).astype(np.float32) * scale + offset
    x = pixels[None] if layout == "nhwc" else pixels.transpose(2, 0, 1)[None]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx, opts, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)}
    for _ in range(5):
        session.run(None, feed)
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    at = lambda q: round(times[round((len(times) - 1) * q)], 2)
    report = {"onnxruntime": ort.__version__, "threads": args.threads, "runs": args.runs,
              "latency_ms": {"p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "max": times[-1]}}
    if args.profile:
        report["profile_ms_per_run"] = profile(onnx, opts, feed, args.runs)
    print(json.dumps(report))


def profile(onnx, opts, feed, runs):
    """Mean ms per run of each kind of node, by onnxruntime's own profiler, in `runs` more runs
    (not the timed ones, which it would slow)."""
    with tempfile.TemporaryDirectory() as tmp:
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "ort")
        session = ort.InferenceSession(onnx, opts, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            session.run(None, feed)
        events = json.load(open(session.end_profiling()))
    ms = collections.Counter()
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        kind = event["args"]["op_name"]
        if kind == "Conv":
            # The filter's shape: [out, in / group, kh, kw].
            _, per_group, kh, kw = next(iter(event["args"]["input_type_shape"][1].values()))
            kind = "Conv 1x1" if kh == kw == 1 else "Conv depthwise" if per_group == 1 else "Conv"
        ms[kind] += event["dur"] / 1e3 / runs
    return [{"op": op, "ms": round(t, 2)} for op, t in ms.most_common()]


if __name__ == "__main__":
    main()
