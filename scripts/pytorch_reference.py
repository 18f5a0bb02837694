#!/usr/bin/env python3
"""The bn-exp benchmark workloads in PyTorch, to put bn-exp's numbers beside PyTorch's.

Same shapes, init, optimiser and step as `bn-exp bench` (see src/bench.rs and configs/):
  mlp, mlp-bn : 784-100-100-100-10 sigmoid MLP, batch 60, N(0, 0.01^2) init, SGD lr 1.0,
                BN before the sigmoid (no bias before BN) in mlp-bn;
  cnn, cnn-bn : conv3x3 3->32, [BN], ReLU, maxpool2; conv3x3 32->64, [BN], ReLU, maxpool2;
                linear 4096->10; batch 128; He init; SGD lr 0.01, momentum 0.9, wd 5e-4;
  inception, inception-bn : Zhang et al.'s small Inception at width 0.25 (every channel count
                times 0.25, as configs/cifar10_inception_relu_bn.json): conv modules
                (conv, [BN], ReLU) in a 3x3 stem, 1x1 and 3x3 modules concatenated, stride-2
                3x3 modules beside a 3x3 stride-2 max-pool, global average pooling, linear 10;
                batch 128, He init, SGD as the CNN's.
A step = gather a batch by index from a pool of random inputs, forward, cross-entropy,
backward, SGD update, and read the loss (as bn-exp does, to detect divergence).

With --fig1 it also trains both paper MLPs for 50,000 steps on MNIST (read from data/mnist),
evaluating the full test set every 500 steps, and reports their wall time.

Prints one JSON object on stdout. Usage:
  python3 scripts/pytorch_reference.py [--reps 50] [--threads 2] [--only mlp,mlp-bn] [--fig1]
                                      [--device cpu|cuda]
On --device cuda the step is the same, on the GPU: the loss read-back ends each timed step.
Needs torch and numpy (see docs/performance.md).
"""
import argparse
import gzip
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def mlp(bn: bool) -> nn.Module:
    layers, fan_in = [], 784
    for width in (100, 100, 100):
        lin = nn.Linear(fan_in, width, bias=not bn)
        layers.append(lin)
        if bn:
            layers.append(nn.BatchNorm1d(width, eps=1e-5, momentum=0.1))
        layers.append(nn.Sigmoid())
        fan_in = width
    layers.append(nn.Linear(fan_in, 10))
    net = nn.Sequential(*layers)
    for m in net.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net


def he_init(net: nn.Module) -> nn.Module:
    """He-normal weights for every conv and linear layer, zero biases (bn-exp's "he" init)."""
    for m in net.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net


def cnn(bn: bool) -> nn.Module:
    layers, ch = [], 3
    for width in (32, 64):
        layers.append(nn.Conv2d(ch, width, 3, padding=1, bias=not bn))
        if bn:
            layers.append(nn.BatchNorm2d(width, eps=1e-5, momentum=0.1))
        layers += [nn.ReLU(), nn.MaxPool2d(2)]
        ch = width
    layers += [nn.Flatten(), nn.Linear(64 * 8 * 8, 10)]
    return he_init(nn.Sequential(*layers))


def inception(bn: bool, width: float = 0.25) -> nn.Module:
    scale = lambda c: max(1, int(c * width + 0.5))

    def conv_module(c_in, c_out, k, stride):
        pad = 1 if (k == 3 and stride == 1) else 0
        layers = [nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad, bias=not bn)]
        if bn:
            layers.append(nn.BatchNorm2d(c_out, eps=1e-5, momentum=0.1))
        return nn.Sequential(*layers, nn.ReLU())

    class Side(nn.Module):
        """Two branches on the same input, concatenated along the channels."""

        def __init__(self, a, b):
            super().__init__()
            self.a, self.b = a, b

        def forward(self, x):
            return torch.cat([self.a(x), self.b(x)], 1)

    stages = [("I", 32, 32), ("I", 32, 48), ("D", 80), ("I", 112, 48), ("I", 96, 64),
              ("I", 80, 80), ("I", 48, 96), ("D", 96), ("I", 176, 160), ("I", 176, 160)]
    ch = scale(96)
    layers = [conv_module(3, ch, 3, 1)]
    for stage in stages:
        if stage[0] == "I":
            c1, c3 = scale(stage[1]), scale(stage[2])
            layers.append(Side(conv_module(ch, c1, 1, 1), conv_module(ch, c3, 3, 1)))
            ch = c1 + c3
        else:
            c3 = scale(stage[1])
            layers.append(Side(conv_module(ch, c3, 3, 2), nn.MaxPool2d(3, stride=2)))
            ch += c3
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ch, 10)]
    return he_init(nn.Sequential(*layers))


WORKLOADS = {
    "mlp": dict(make=lambda: mlp(False), shape=(784,), batch=60, lr=1.0, momentum=0.0, wd=0.0),
    "mlp-bn": dict(make=lambda: mlp(True), shape=(784,), batch=60, lr=1.0, momentum=0.0, wd=0.0),
    "cnn": dict(make=lambda: cnn(False), shape=(3, 32, 32), batch=128, lr=0.01, momentum=0.9, wd=5e-4),
    "cnn-bn": dict(make=lambda: cnn(True), shape=(3, 32, 32), batch=128, lr=0.01, momentum=0.9, wd=5e-4),
    "inception": dict(make=lambda: inception(False), shape=(3, 32, 32), batch=128, lr=0.01, momentum=0.9, wd=5e-4),
    "inception-bn": dict(make=lambda: inception(True), shape=(3, 32, 32), batch=128, lr=0.01, momentum=0.9, wd=5e-4),
}


def time_steps(name: str, reps: int, device: str = "cpu") -> dict:
    w = WORKLOADS[name]
    torch.manual_seed(1)
    net = w["make"]().to(device).train()
    opt = torch.optim.SGD(net.parameters(), lr=w["lr"], momentum=w["momentum"], weight_decay=w["wd"])
    pool = max(1024, w["batch"])
    images = torch.randn(pool, *w["shape"], device=device)
    labels = torch.randint(0, 10, (pool,), device=device)
    warmup = min(max(reps // 5, 2), 20)
    times = []
    for i in range(warmup + reps):
        idx = torch.randint(0, pool, (w["batch"],), device=device)
        t0 = time.perf_counter()
        x, y = images[idx], labels[idx]
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e6)
    times.sort()
    med = times[len(times) // 2]
    return dict(batch_size=w["batch"], reps=reps, median_us=med, min_us=times[0],
                max_us=times[-1], steps_per_s=1e6 / med)


def read_idx(path: str):
    import numpy as np
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def train_fig1(bn: bool, data_dir: str, steps: int = 50_000) -> dict:
    xs = torch.tensor(read_idx(os.path.join(data_dir, "mnist/train-images-idx3-ubyte.gz")).reshape(-1, 784), dtype=torch.float32) / 255
    ys = torch.tensor(read_idx(os.path.join(data_dir, "mnist/train-labels-idx1-ubyte.gz")), dtype=torch.long)
    xt = torch.tensor(read_idx(os.path.join(data_dir, "mnist/t10k-images-idx3-ubyte.gz")).reshape(-1, 784), dtype=torch.float32) / 255
    yt = torch.tensor(read_idx(os.path.join(data_dir, "mnist/t10k-labels-idx1-ubyte.gz")), dtype=torch.long)
    torch.manual_seed(0)
    net = mlp(bn)
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    per_epoch = len(xs) // 60
    t0 = time.perf_counter()
    acc = None
    for step in range(steps):
        if step % per_epoch == 0:
            perm = torch.randperm(len(xs))
        idx = perm[(step % per_epoch) * 60:(step % per_epoch + 1) * 60]
        net.train()
        loss = F.cross_entropy(net(xs[idx]), ys[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
        if (step + 1) % 500 == 0:
            net.eval()
            with torch.no_grad():
                acc = (net(xt).argmax(1) == yt).float().mean().item()
    return dict(wall_s=time.perf_counter() - t0, final_test_acc=acc, steps=steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default=",".join(WORKLOADS))
    ap.add_argument("--fig1", action="store_true")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU ({args.threads} threads)"
    out = dict(torch=torch.__version__, threads=args.threads, device=device_name, steps={})
    for name in args.only.split(","):
        if name not in WORKLOADS:
            sys.exit(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
        out["steps"][name] = time_steps(name, args.reps, args.device)
        print(f"{name}: {out['steps'][name]['median_us']:.0f} us/step", file=sys.stderr)
    if args.fig1:
        out["fig1"] = {name: train_fig1(bn, args.data_dir) for name, bn in (("bn", True), ("nobn", False))}
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
