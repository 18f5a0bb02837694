#!/usr/bin/env python3
"""Remake the PyTorch reference vectors that bn-exp's tests check its BatchNorm against.

    python3 scripts/make_reference_vectors.py            # writes tests/fixtures/batch_norm_pytorch.json
    python3 scripts/make_reference_vectors.py --check F  # recompute F's outputs from its inputs

Everything is float64 and computed by PyTorch's own modules (BatchNorm1d for [N, C] inputs,
BatchNorm2d for [N, C, H, W]), except the paper's Algorithm 2 population statistics, which
PyTorch does not have and which are computed here from their formulas. The inputs come from a
seeded torch.Generator, so the same PyTorch version writes the same file. Needs torch only
(see docs/performance.md for installing it in a virtual environment).

--check reads an existing reference file, recomputes every output from that file's own inputs
(batches, upstream gradient, gamma, beta, eval_x) with this script's code, and prints the
largest relative difference per case: a way to confirm that this script computes what an
earlier file holds, whoever made it.
"""
import argparse
import json
import os
import sys

import torch

DOC = """Reference vectors for a BatchNorm implementation, computed with PyTorch's own BatchNorm.

Each case: a training-mode forward on `batches[0]`, the gradients of sum(y * upstream) w.r.t. x, gamma
and beta, the running statistics after every training batch (PyTorch convention:
running = (1 - momentum) * running + momentum * batch_stat, running_var from the UNBIASED batch variance),
an inference-mode forward on `eval_x` with those running statistics, and the paper's Algorithm 2
population statistics over all training batches (mean of batch means; m/(m-1) * mean of biased batch
variances, m = values per channel in a batch) with the inference output they give.
All tensors are flattened row-major (N, C[, H, W])."""

# name, shape, number of training batches, seed. The cases: an MLP-sized batch (the paper's
# hidden layer), a conv batch, and the smallest legal batch (m = 2, where m/(m-1) = 2).
CASES = [
    ("mlp_60x100", [60, 100], 3, 1),
    ("conv_8x3x5x5", [8, 3, 5, 5], 3, 2),
    ("tiny_m2", [2, 4], 2, 3),
]
EPS = 1e-5
MOMENTUM = 0.1


def flat(t):
    return t.detach().reshape(-1).tolist()


def make_inputs(shape, n_batches, seed):
    """Inputs with per-channel offsets and scales, so that normalising them does something."""
    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    per_channel = [1, c] + [1] * (len(shape) - 2)
    offset = (0.7 + 0.3 * torch.randn(per_channel, generator=g, dtype=torch.float64))
    scale = 1.5 + torch.rand(per_channel, generator=g, dtype=torch.float64)
    batches = [offset + scale * torch.randn(shape, generator=g, dtype=torch.float64)
               for _ in range(n_batches)]
    return {
        "gamma": 0.5 + torch.rand(c, generator=g, dtype=torch.float64),
        "beta": torch.randn(c, generator=g, dtype=torch.float64),
        "batches": batches,
        "upstream": torch.randn(shape, generator=g, dtype=torch.float64),
        "eval_x": torch.randn(shape, generator=g, dtype=torch.float64),
    }


def compute(name, shape, inputs, eps=EPS, momentum=MOMENTUM):
    """Every output of one case from its inputs."""
    c = shape[1]
    module = torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d
    bn = module(c, eps=eps, momentum=momentum, dtype=torch.float64)
    with torch.no_grad():
        bn.weight.copy_(inputs["gamma"])
        bn.bias.copy_(inputs["beta"])
    running_init = {"mean": flat(bn.running_mean), "var": flat(bn.running_var)}
    bn.train()
    x0 = inputs["batches"][0].clone().requires_grad_(True)
    y = bn(x0)
    (y * inputs["upstream"]).sum().backward()
    running = [{"mean": flat(bn.running_mean), "var": flat(bn.running_var)}]
    with torch.no_grad():
        for x in inputs["batches"][1:]:
            bn(x)
            running.append({"mean": flat(bn.running_mean), "var": flat(bn.running_var)})
    bn.eval()
    with torch.no_grad():
        y_eval_running = bn(inputs["eval_x"])

    # Algorithm 2: E[x] = mean of the batch means, Var[x] = m/(m-1) * mean of the biased
    # batch variances, m = values per channel in one batch.
    axes = [0] + list(range(2, len(shape)))
    m = x0.numel() // c
    means = torch.stack([b.mean(dim=axes) for b in inputs["batches"]])
    biased = torch.stack([b.var(dim=axes, unbiased=False) for b in inputs["batches"]])
    pop_mean = means.mean(dim=0)
    pop_var = m / (m - 1) * biased.mean(dim=0)
    y_eval_pop = torch.nn.functional.batch_norm(
        inputs["eval_x"], pop_mean, pop_var, inputs["gamma"], inputs["beta"],
        training=False, eps=eps)
    return {
        "name": name,
        "shape": shape,
        "eps": eps,
        "momentum": momentum,
        "gamma": flat(inputs["gamma"]),
        "beta": flat(inputs["beta"]),
        "batches": [flat(b) for b in inputs["batches"]],
        "upstream": flat(inputs["upstream"]),
        "y_train": flat(y),
        "dx": flat(x0.grad),
        "dgamma": flat(bn.weight.grad),
        "dbeta": flat(bn.bias.grad),
        "running_after_each_batch": running,
        "running_init": running_init,
        "eval_x": flat(inputs["eval_x"]),
        "y_eval_running": flat(y_eval_running),
        "population": {"mean": flat(pop_mean), "var": flat(pop_var), "y_eval": flat(y_eval_pop)},
    }


def inputs_of(case):
    """The inputs stored in an existing case, as tensors."""
    t = lambda v: torch.tensor(v, dtype=torch.float64)
    shape = case["shape"]
    return {
        "gamma": t(case["gamma"]),
        "beta": t(case["beta"]),
        "batches": [t(b).reshape(shape) for b in case["batches"]],
        "upstream": t(case["upstream"]).reshape(shape),
        "eval_x": t(case["eval_x"]).reshape(shape),
    }


def max_rel_diff(a, b):
    """Largest |a - b| / max(1, |b|) over two nested structures of numbers."""
    if isinstance(b, dict):
        return max(max_rel_diff(a[k], b[k]) for k in b)
    if isinstance(b, list):
        assert len(a) == len(b), "lengths differ"
        return max((max_rel_diff(x, y) for x, y in zip(a, b)), default=0.0)
    if isinstance(b, (int, float)) and not isinstance(b, bool):
        return abs(a - b) / max(1.0, abs(b))
    return 0.0 if a == b else float("inf")


def check(path):
    reference = json.load(open(path))
    worst = 0.0
    for case in reference["cases"]:
        again = compute(case["name"], case["shape"], inputs_of(case), case["eps"], case["momentum"])
        diff = max_rel_diff(again, case)
        worst = max(worst, diff)
        print(f"{case['name']}: largest relative difference {diff:.2e}")
    return worst


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures",
                                                      "batch_norm_pytorch.json"))
    parser.add_argument("--check", metavar="FILE",
                        help="recompute FILE's outputs from its inputs and compare")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.check:
        worst = check(args.check)
        sys.exit(0 if worst < 1e-12 else 1)
    cases = [compute(name, shape, make_inputs(shape, n, seed)) for name, shape, n, seed in CASES]
    out = {"generator": f"PyTorch {torch.__version__}, float64, scripts/make_reference_vectors.py",
           "doc": DOC, "cases": cases}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f)
        f.write("\n")
    print(f"wrote {args.out} ({len(cases)} cases)")


if __name__ == "__main__":
    main()
