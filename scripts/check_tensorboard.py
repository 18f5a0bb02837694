#!/usr/bin/env python3
"""Read a bn-exp run's TensorBoard event file with TensorBoard's own reader and check it against
the run's record files: every scalar of metrics.jsonl (test accuracy, train and test loss,
learning rate) at its step, each step once; every layer's histogram of activations.jsonl
(counts per bin, below and above the range); the tracked unit's percentiles; the config as text.

Usage: python3 scripts/check_tensorboard.py RUN_DIR
Prints one line per kind checked and exits 0, or names the first mismatch and exits 1.
Needs the tensorboard package (pip install tensorboard).
"""
import json
import math
import os
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def fail(message: str) -> None:
    print(f"MISMATCH: {message}")
    sys.exit(1)


def lines(path: str) -> list:
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def close(a: float, b: float) -> bool:
    # The event file stores scalars as float32.
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7)


def main() -> None:
    run = sys.argv[1]
    files = [f for f in os.listdir(run) if "tfevents" in f]
    if files != ["events.out.tfevents.bn-exp"]:
        fail(f"event files in {run}: {files}")
    acc = EventAccumulator(run, size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()

    metrics = lines(os.path.join(run, "metrics.jsonl"))
    for key, tag in [("test_acc", "accuracy/test"), ("train_loss", "loss/train"),
                     ("test_loss", "loss/test"), ("lr", "learning rate")]:
        want = [(m["step"], m[key]) for m in metrics if m.get(key) is not None]
        got = [(e.step, e.value) for e in acc.Scalars(tag)] if tag in tags["scalars"] else []
        if [s for s, _ in got] != [s for s, _ in want]:
            fail(f"{tag}: steps {[s for s, _ in got]} against metrics.jsonl's {[s for s, _ in want]}")
        for (step, g), (_, w) in zip(got, want):
            if not close(g, w):
                fail(f"{tag} at step {step}: {g} against {w}")
    print(f"scalars: {len(metrics)} evaluations x 4 tags agree with metrics.jsonl, each step once")

    activations = lines(os.path.join(run, "activations.jsonl"))
    checked = 0
    for record in activations:
        step = record["step"]
        for q in ("p15", "p50", "p85"):
            want = record["tracked"].get(q)
            if want is None:
                continue
            got = [e.value for e in acc.Scalars(f"tracked unit/{q}") if e.step == step]
            if len(got) != 1 or not close(got[0], want):
                fail(f"tracked unit/{q} at step {step}: {got} against {want}")
        for layer in record["layers"]:
            tag = f"activations/layer {layer['layer'] + 1}"
            events = [e for e in acc.Histograms(tag) if e.step == step]
            if len(events) != 1:
                fail(f"{tag} at step {step}: {len(events)} histograms")
            h = events[0].histogram_value
            hist = layer["hist"]
            want_counts = [hist["below"]] + hist["counts"] + [hist["above"]]
            if [round(c) for c in h.bucket] != want_counts:
                fail(f"{tag} at step {step}: buckets {list(h.bucket)} against {want_counts}")
            width = (hist["hi"] - hist["lo"]) / len(hist["counts"])
            if not close(h.bucket_limit[0], hist["lo"]) or not close(h.bucket_limit[-2], hist["hi"]):
                fail(f"{tag} at step {step}: limits {h.bucket_limit[0]}..{h.bucket_limit[-2]}")
            if not close(h.bucket_limit[1] - h.bucket_limit[0], width):
                fail(f"{tag} at step {step}: bin width {h.bucket_limit[1] - h.bucket_limit[0]}")
            if round(h.num) != sum(want_counts):
                fail(f"{tag} at step {step}: num {h.num} against {sum(want_counts)}")
            checked += 1
    print(f"histograms: {checked} (layer, step) histograms agree with activations.jsonl")

    text = [e for e in acc.Tensors("config")] if "config" in tags["tensors"] else []
    if len(text) != 1:
        fail(f"config text: {len(text)} events")
    config = json.loads(text[0].tensor_proto.string_val[0].decode())
    with open(os.path.join(run, "config.json")) as f:
        if config != json.load(f):
            fail("the config text is not config.json")
    print("config: the text is config.json")


if __name__ == "__main__":
    main()
