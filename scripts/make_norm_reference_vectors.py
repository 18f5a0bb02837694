#!/usr/bin/env python3
"""Remake the PyTorch reference vectors for the normalisation layers beside BatchNorm.

    python3 scripts/make_norm_reference_vectors.py            # writes tests/fixtures/norm_pytorch.json
    python3 scripts/make_norm_reference_vectors.py --out F    # writes F instead
    python3 scripts/make_norm_reference_vectors.py --check F  # recompute F's outputs from its inputs

Covers LayerNorm, GroupNorm, Batch Renormalization, Weight Normalization and mean-only BatchNorm,
all in float64, with the layout of the `doc` string below (the same structure, key names, case
names, shapes and hyper-parameters as the shared reference file it was written to reproduce, plus
single-example cases of LayerNorm and GroupNorm, which that file lacks).
PyTorch's own modules compute what they can: torch.nn.LayerNorm, torch.nn.GroupNorm, and
torch.nn.utils.parametrizations.weight_norm on a torch.nn.Linear (weight layout (out, in)).
PyTorch has no Batch Renormalization or mean-only BatchNorm, so those two are written out here in
autograd, formula by formula, exactly as the doc states them. The weight-norm data-dependent
initialisation is also computed from its formula. Inputs come from a seeded torch.Generator per
case, so the same PyTorch version writes the same file. Needs torch only (see docs/performance.md
for installing it in a virtual environment).

--check reads an existing reference file, recomputes every output from that file's own inputs
(x / batches, upstream, gamma, beta, v, g, b, running inits, eval_x, r_max, d_max, eps, momentum,
groups) with this script's code, and prints the largest relative difference per case and per
field; it exits non-zero if any exceeds 1e-12. A way to confirm that this script computes what an
earlier file holds, whoever made it.
"""
import argparse
import json
import os
import sys

import torch

DOC = """Reference vectors for normalisation layers beside BatchNorm, computed in float64 with PyTorch.

Every case gives the inputs, the training-mode output, and the gradients of sum(y * upstream) with
respect to the input and every parameter. Layout is row-major; shapes are stated per case.

layer_norm   torch.nn.LayerNorm(F) on x of shape (N, F): per-example statistics over the F features,
             biased variance, eps inside the root, per-feature gamma/beta. Same in training and inference.
group_norm   torch.nn.GroupNorm(G, C) on x of shape (N, C) or (N, C, H, W): per-example statistics over
             the C/G channels of a group (and H, W), biased variance, eps inside the root, per-CHANNEL
             gamma/beta. G = 1 is LayerNorm for feature maps, G = C is InstanceNorm.
batch_renorm Ioffe 2017, Algorithm 1, written out in PyTorch autograd (PyTorch has no such layer):
             mu_B = mean over (N, H, W); sigma_B = sqrt(biased var_B + eps);
             r = stopgrad(clip(sigma_B / sigma, 1/r_max, r_max)); d = stopgrad(clip((mu_B - mu) / sigma, -d_max, d_max));
             y = gamma * ((x - mu_B) / sigma_B * r + d) + beta;
             then mu += momentum * (mu_B - mu); sigma += momentum * (sigma_B - sigma)   (running STD, eps inside);
             inference: y = gamma * (x - mu) / sigma + beta.
             Each case lists r, d and the running mu, sigma after every training batch, the gradients of
             the first batch, and the inference output after the last batch.
weight_norm  Salimans & Kingma 2016 on a linear layer, PyTorch's layout: v is (out, in), w = g * v / ||v||
             with the norm over `in` for each output unit, y = x @ w^T + b. Gradients for x, v, g, b.
             `init` is the paper's data-dependent initialisation on batch `x` (after v is drawn):
             t = x @ (v / ||v||)^T, g = 1 / sqrt(biased var(t) + 1e-10), b = -mean(t) * g, per output unit.
mean_only_bn the companion of weight_norm: y = x - mu_B + beta in training (no division by a std);
             running mean as in BatchNorm (running = (1 - momentum) * running + momentum * mu_B);
             inference y = x - running + beta."""

EPS = 1e-5
MOMENTUM = 0.1
# The weight-norm init's guard against a zero variance, as the doc states it (not the layer's eps).
INIT_EPS = 1e-10
TOLERANCE = 1e-12

# The cases, by kind: (name, shape or shapes, hyper-parameters, number of training batches, seed).
# Shapes cover a paper-sized MLP layer, a conv feature map, and the smallest shapes where every
# normalisation still does something (2 features, 1 group, m = 8 per channel...). The single
# examples (N = 1) normalise over counts that are not powers of two (7 features; 2 channels of
# 3 x 3): dividing by such a count is where a float32 constant in a backward shows (1/7 and 1/18
# are inexact in float32, 1/2 and 1/64 are exact).
LAYER_NORM = [("ln_60x100", [60, 100], 11), ("ln_3x2", [3, 2], 12), ("ln_1x7", [1, 7], 13)]
GROUP_NORM = [
    ("gn_mlp_60x100_g10", [60, 100], 10, 21),
    ("gn_conv_4x8x5x5_g4", [4, 8, 5, 5], 4, 22),
    ("gn_conv_2x6x3x3_g1", [2, 6, 3, 3], 1, 23),  # G = 1: LayerNorm over (C, H, W)
    ("gn_mlp_1x4_g2", [1, 4], 2, 24),  # one example, 2 groups of 2 channels
    ("gn_conv_1x4x3x3_g2", [1, 4, 3, 3], 2, 25),  # the same on 3 x 3 maps: 18 values a group
]
# r_max, d_max: the MLP case uses tight clips (1.5, 0.5) so r and d clip often; the conv case
# loose ones (3, 5) with running statistics far from the batch's, so r and d are large but mostly
# unclipped. Four and three training batches.
BATCH_RENORM = [
    ("brn_mlp_8x6", [8, 6], 1.5, 0.5, 4, 31),
    ("brn_conv_4x3x3x3", [4, 3, 3, 3], 3.0, 5.0, 3, 32),
]
# x (N, in), v (out, in).
WEIGHT_NORM = [("wn_20x50x30", [20, 50], [30, 50], 41), ("wn_5x7x3", [5, 7], [3, 7], 42)]
MEAN_ONLY_BN = [
    ("mobn_mlp_10x5", [10, 5], 3, 51),
    ("mobn_conv_3x4x2x2", [3, 4, 2, 2], 2, 52),
]

F64 = torch.float64


def flat(t):
    return t.detach().reshape(-1).tolist()


def tensor(v, shape=None):
    t = torch.tensor(v, dtype=F64)
    return t if shape is None else t.reshape(shape)


def channel_view(shape):
    """Shape that broadcasts a per-channel vector against a (N, C[, H, W]) tensor."""
    return [1, shape[1]] + [1] * (len(shape) - 2)


def shifted(shape, g):
    """Per-channel offsets and scales, so that normalising does something."""
    per_channel = channel_view(shape)
    offset = 0.7 + 0.3 * torch.randn(per_channel, generator=g, dtype=F64)
    scale = 1.5 + torch.rand(per_channel, generator=g, dtype=F64)
    return offset, scale


# ---------------------------------------------------------------------------------------------
# LayerNorm and GroupNorm: PyTorch's own modules.

def make_layer_norm_inputs(shape, seed):
    g = torch.Generator().manual_seed(seed)
    n, f = shape
    # Per-example offsets and scales: LayerNorm normalises rows, so rows should differ.
    offset = 0.5 + torch.randn(n, 1, generator=g, dtype=F64)
    scale = 1.0 + torch.rand(n, 1, generator=g, dtype=F64)
    return {
        "gamma": 0.5 + torch.rand(f, generator=g, dtype=F64),
        "beta": torch.randn(f, generator=g, dtype=F64),
        "x": offset + scale * torch.randn(shape, generator=g, dtype=F64),
        "upstream": torch.randn(shape, generator=g, dtype=F64),
    }


def compute_layer_norm(name, shape, inputs, eps=EPS):
    ln = torch.nn.LayerNorm(shape[1], eps=eps, dtype=F64)
    with torch.no_grad():
        ln.weight.copy_(inputs["gamma"])
        ln.bias.copy_(inputs["beta"])
    x = inputs["x"].clone().requires_grad_(True)
    y = ln(x)
    (y * inputs["upstream"]).sum().backward()
    return {
        "name": name, "shape": shape, "eps": eps,
        "gamma": flat(inputs["gamma"]), "beta": flat(inputs["beta"]),
        "x": flat(inputs["x"]), "upstream": flat(inputs["upstream"]),
        "y": flat(y), "dx": flat(x.grad),
        "dgamma": flat(ln.weight.grad), "dbeta": flat(ln.bias.grad),
    }


def make_group_norm_inputs(shape, seed):
    g = torch.Generator().manual_seed(seed)
    offset, scale = shifted(shape, g)
    c = shape[1]
    return {
        "gamma": 0.5 + torch.rand(c, generator=g, dtype=F64),
        "beta": torch.randn(c, generator=g, dtype=F64),
        "x": offset + scale * torch.randn(shape, generator=g, dtype=F64),
        "upstream": torch.randn(shape, generator=g, dtype=F64),
    }


def compute_group_norm(name, shape, groups, inputs, eps=EPS):
    gn = torch.nn.GroupNorm(groups, shape[1], eps=eps, dtype=F64)
    with torch.no_grad():
        gn.weight.copy_(inputs["gamma"])
        gn.bias.copy_(inputs["beta"])
    x = inputs["x"].clone().requires_grad_(True)
    y = gn(x)  # GroupNorm takes (N, C) as well as (N, C, H, W)
    (y * inputs["upstream"]).sum().backward()
    return {
        "name": name, "shape": shape, "groups": groups, "eps": eps,
        "gamma": flat(inputs["gamma"]), "beta": flat(inputs["beta"]),
        "x": flat(inputs["x"]), "upstream": flat(inputs["upstream"]),
        "y": flat(y), "dx": flat(x.grad),
        "dgamma": flat(gn.weight.grad), "dbeta": flat(gn.bias.grad),
    }


# ---------------------------------------------------------------------------------------------
# Batch Renormalization: Ioffe 2017, Algorithm 1, in autograd.

def make_batch_renorm_inputs(shape, n_batches, seed):
    g = torch.Generator().manual_seed(seed)
    offset, scale = shifted(shape, g)
    c = shape[1]
    return {
        "gamma": 0.5 + torch.rand(c, generator=g, dtype=F64),
        "beta": torch.randn(c, generator=g, dtype=F64),
        # Running statistics that disagree with the batches' (as early in training), so that r
        # and d are far from 1 and 0 and the clips matter. A running std from 0.5 lets r reach the
        # conv case's loose r_max = 3 against batches whose std is 1.5 to 2.5 (from 0.8 it never
        # did, see clipped_values).
        "running_mean_init": torch.randn(c, generator=g, dtype=F64),
        "running_std_init": 0.5 + torch.rand(c, generator=g, dtype=F64),
        "batches": [offset + scale * torch.randn(shape, generator=g, dtype=F64)
                    for _ in range(n_batches)],
        "upstream": torch.randn(shape, generator=g, dtype=F64),
        "eval_x": offset + scale * torch.randn(shape, generator=g, dtype=F64),
    }


def batch_renorm_train(x, gamma, beta, mu, sigma, r_max, d_max, eps):
    """One training-mode forward. mu, sigma: the running mean and running std BEFORE this batch.
    Returns y (in the autograd graph of x, gamma, beta), r, d, mu_B, sigma_B (the last four
    detached: r and d are constants in the backward pass; mu_B and sigma_B go to the running
    update only)."""
    shape = list(x.shape)
    axes = [0] + list(range(2, len(shape)))
    view = channel_view(shape)
    mu_b = x.mean(dim=axes)
    sigma_b = torch.sqrt(x.var(dim=axes, unbiased=False) + eps)
    r = torch.clamp(sigma_b.detach() / sigma, 1.0 / r_max, r_max)
    d = torch.clamp((mu_b.detach() - mu) / sigma, -d_max, d_max)
    x_hat = (x - mu_b.reshape(view)) / sigma_b.reshape(view) * r.reshape(view) + d.reshape(view)
    y = gamma.reshape(view) * x_hat + beta.reshape(view)
    return y, r, d, mu_b.detach(), sigma_b.detach()


def clipped_values(case):
    """How many of a Batch Renorm case's r and d, over its batches, sit at their clip."""
    r_max, d_max = case["r_max"], case["d_max"]
    at = lambda v, limit: abs(v - limit) < 1e-12
    return sum(sum(at(r, r_max) or at(r, 1.0 / r_max) for r in b["r"])
               + sum(at(abs(d), d_max) for d in b["d"]) for b in case["per_batch"])


def compute_batch_renorm(name, shape, r_max, d_max, inputs, eps=EPS, momentum=MOMENTUM):
    view = channel_view(shape)
    gamma = inputs["gamma"].clone().requires_grad_(True)
    beta = inputs["beta"].clone().requires_grad_(True)
    mu = inputs["running_mean_init"].clone()
    sigma = inputs["running_std_init"].clone()
    per_batch = []
    y_train = dx = None
    for i, batch in enumerate(inputs["batches"]):
        # Gradients for the first batch only (with the initial running statistics); the later
        # batches just advance r, d and the running statistics.
        x = batch.clone().requires_grad_(i == 0)
        y, r, d, mu_b, sigma_b = batch_renorm_train(x, gamma, beta, mu, sigma, r_max, d_max, eps)
        if i == 0:
            (y * inputs["upstream"]).sum().backward()
            y_train, dx = y, x.grad
        # Running update after the batch's r and d were computed; a per_batch entry holds the
        # r, d that batch used and the running statistics after it.
        mu = mu + momentum * (mu_b - mu)
        sigma = sigma + momentum * (sigma_b - sigma)
        per_batch.append({"r": flat(r), "d": flat(d),
                          "running_mean": flat(mu), "running_std": flat(sigma)})
    # Inference with the running statistics after the last batch; sigma already holds eps.
    y_eval = (inputs["gamma"].reshape(view) * (inputs["eval_x"] - mu.reshape(view))
              / sigma.reshape(view) + inputs["beta"].reshape(view))
    return {
        "name": name, "shape": shape, "eps": eps, "momentum": momentum,
        "r_max": r_max, "d_max": d_max,
        "gamma": flat(inputs["gamma"]), "beta": flat(inputs["beta"]),
        "running_mean_init": flat(inputs["running_mean_init"]),
        "running_std_init": flat(inputs["running_std_init"]),
        "batches": [flat(b) for b in inputs["batches"]],
        "upstream": flat(inputs["upstream"]),
        "per_batch": per_batch,
        "eval_x": flat(inputs["eval_x"]), "y_eval": flat(y_eval),
        "y_train": flat(y_train), "dx": flat(dx),
        "dgamma": flat(gamma.grad), "dbeta": flat(beta.grad),
    }


# ---------------------------------------------------------------------------------------------
# Weight Normalization: PyTorch's weight_norm parametrisation on a Linear layer.

def make_weight_norm_inputs(x_shape, v_shape, seed):
    g = torch.Generator().manual_seed(seed)
    out = v_shape[0]
    return {
        "v": torch.randn(v_shape, generator=g, dtype=F64) / x_shape[1] ** 0.5,
        "g": 0.5 + torch.rand(out, generator=g, dtype=F64),
        "b": 0.3 * torch.randn(out, generator=g, dtype=F64),
        "x": 0.2 + torch.randn(x_shape, generator=g, dtype=F64),
        "upstream": torch.randn([x_shape[0], out], generator=g, dtype=F64),
    }


def compute_weight_norm(name, x_shape, v_shape, inputs):
    out, fan_in = v_shape
    linear = torch.nn.Linear(fan_in, out, dtype=F64)
    # dim=0: one norm per output unit, over the `in` entries of its row of the (out, in) weight.
    linear = torch.nn.utils.parametrizations.weight_norm(linear, name="weight", dim=0)
    params = linear.parametrizations.weight
    with torch.no_grad():
        params.original0.copy_(inputs["g"].reshape(out, 1))  # g, kept as (out, 1)
        params.original1.copy_(inputs["v"])                 # v, (out, in)
        linear.bias.copy_(inputs["b"])
    x = inputs["x"].clone().requires_grad_(True)
    y = linear(x)
    (y * inputs["upstream"]).sum().backward()

    # The paper's data-dependent init (section 3), from its formula, on batch `x` with this v.
    with torch.no_grad():
        v = inputs["v"]
        t = inputs["x"] @ (v / v.norm(dim=1, keepdim=True)).T
        init_g = 1.0 / torch.sqrt(t.var(dim=0, unbiased=False) + INIT_EPS)
        init_b = -t.mean(dim=0) * init_g
    return {
        "name": name, "x_shape": x_shape, "v_shape": v_shape,
        "v": flat(inputs["v"]), "g": flat(inputs["g"]), "b": flat(inputs["b"]),
        "x": flat(inputs["x"]), "upstream": flat(inputs["upstream"]),
        "y": flat(y), "dx": flat(x.grad),
        "dv": flat(params.original1.grad), "dg": flat(params.original0.grad),
        "db": flat(linear.bias.grad),
        "init": {"g": flat(init_g), "b": flat(init_b)},
    }


# ---------------------------------------------------------------------------------------------
# Mean-only BatchNorm: in autograd.

def make_mean_only_bn_inputs(shape, n_batches, seed):
    g = torch.Generator().manual_seed(seed)
    offset, scale = shifted(shape, g)
    c = shape[1]
    return {
        "beta": torch.randn(c, generator=g, dtype=F64),
        "running_init": torch.zeros(c, dtype=F64),  # as BatchNorm starts its running mean
        "batches": [offset + scale * torch.randn(shape, generator=g, dtype=F64)
                    for _ in range(n_batches)],
        "upstream": torch.randn(shape, generator=g, dtype=F64),
        "eval_x": offset + scale * torch.randn(shape, generator=g, dtype=F64),
    }


def compute_mean_only_bn(name, shape, inputs, momentum=MOMENTUM):
    axes = [0] + list(range(2, len(shape)))
    view = channel_view(shape)
    beta = inputs["beta"].clone().requires_grad_(True)
    running = inputs["running_init"].clone()
    after_each = []
    y_train = dx = None
    for i, batch in enumerate(inputs["batches"]):
        x = batch.clone().requires_grad_(i == 0)
        mu_b = x.mean(dim=axes)
        y = x - mu_b.reshape(view) + beta.reshape(view)
        if i == 0:  # training output and gradients of the first batch
            (y * inputs["upstream"]).sum().backward()
            y_train, dx = y, x.grad
        running = (1 - momentum) * running + momentum * mu_b.detach()
        after_each.append(flat(running))
    y_eval = inputs["eval_x"] - running.reshape(view) + inputs["beta"].reshape(view)
    return {
        "name": name, "shape": shape, "momentum": momentum,
        "beta": flat(inputs["beta"]),
        "batches": [flat(b) for b in inputs["batches"]],
        "upstream": flat(inputs["upstream"]),
        "running_mean_after_each_batch": after_each,
        "running_init": flat(inputs["running_init"]),
        "eval_x": flat(inputs["eval_x"]), "y_eval": flat(y_eval),
        "y_train": flat(y_train), "dx": flat(dx),
        "dbeta": flat(beta.grad),
    }


# ---------------------------------------------------------------------------------------------

def generate():
    cases = {
        "layer_norm": [compute_layer_norm(n, s, make_layer_norm_inputs(s, seed))
                       for n, s, seed in LAYER_NORM],
        "group_norm": [compute_group_norm(n, s, groups, make_group_norm_inputs(s, seed))
                       for n, s, groups, seed in GROUP_NORM],
        "batch_renorm": [compute_batch_renorm(n, s, r_max, d_max,
                                              make_batch_renorm_inputs(s, nb, seed))
                         for n, s, r_max, d_max, nb, seed in BATCH_RENORM],
        "weight_norm": [compute_weight_norm(n, xs, vs, make_weight_norm_inputs(xs, vs, seed))
                        for n, xs, vs, seed in WEIGHT_NORM],
        "mean_only_bn": [compute_mean_only_bn(n, s, make_mean_only_bn_inputs(s, nb, seed))
                         for n, s, nb, seed in MEAN_ONLY_BN],
    }
    # tests/norm_layers.rs tests the clips through these cases: each must clip something.
    for case in cases["batch_renorm"]:
        assert clipped_values(case) > 0, f"{case['name']}: no r or d is clipped"
    return cases


def recompute(kind, case):
    """Every output of a stored case, from that case's own inputs."""
    if kind in ("layer_norm", "group_norm"):
        shape = case["shape"]
        inputs = {"gamma": tensor(case["gamma"]), "beta": tensor(case["beta"]),
                  "x": tensor(case["x"], shape), "upstream": tensor(case["upstream"], shape)}
        if kind == "layer_norm":
            return compute_layer_norm(case["name"], shape, inputs, case["eps"])
        return compute_group_norm(case["name"], shape, case["groups"], inputs, case["eps"])
    if kind == "batch_renorm":
        shape = case["shape"]
        inputs = {"gamma": tensor(case["gamma"]), "beta": tensor(case["beta"]),
                  "running_mean_init": tensor(case["running_mean_init"]),
                  "running_std_init": tensor(case["running_std_init"]),
                  "batches": [tensor(b, shape) for b in case["batches"]],
                  "upstream": tensor(case["upstream"], shape),
                  "eval_x": tensor(case["eval_x"], shape)}
        return compute_batch_renorm(case["name"], shape, case["r_max"], case["d_max"], inputs,
                                    case["eps"], case["momentum"])
    if kind == "weight_norm":
        xs, vs = case["x_shape"], case["v_shape"]
        inputs = {"v": tensor(case["v"], vs), "g": tensor(case["g"]), "b": tensor(case["b"]),
                  "x": tensor(case["x"], xs), "upstream": tensor(case["upstream"], [xs[0], vs[0]])}
        return compute_weight_norm(case["name"], xs, vs, inputs)
    if kind == "mean_only_bn":
        shape = case["shape"]
        inputs = {"beta": tensor(case["beta"]), "running_init": tensor(case["running_init"]),
                  "batches": [tensor(b, shape) for b in case["batches"]],
                  "upstream": tensor(case["upstream"], shape),
                  "eval_x": tensor(case["eval_x"], shape)}
        return compute_mean_only_bn(case["name"], shape, inputs, case["momentum"])
    raise ValueError(f"unknown kind {kind}")


def max_rel_diff(a, b):
    """Largest |a - b| / max(1, |b|) over two nested structures of numbers (b: the reference)."""
    if isinstance(b, dict):
        assert list(a) == list(b), f"keys differ: {list(a)} vs {list(b)}"
        return max((max_rel_diff(a[k], b[k]) for k in b), default=0.0)
    if isinstance(b, list):
        assert len(a) == len(b), "lengths differ"
        return max((max_rel_diff(x, y) for x, y in zip(a, b)), default=0.0)
    if isinstance(b, (int, float)) and not isinstance(b, bool):
        return abs(a - b) / max(1.0, abs(b))
    return 0.0 if a == b else float("inf")


# Fields a case stores as given (its inputs and hyper-parameters): they are copied through, so
# comparing them only checks the layout; --check reports the computed fields.
INPUT_FIELDS = {"name", "shape", "x_shape", "v_shape", "groups", "eps", "momentum", "r_max",
                "d_max", "gamma", "beta", "x", "upstream", "batches", "eval_x", "v", "g", "b",
                "running_mean_init", "running_std_init", "running_init"}


def check(path):
    reference = json.load(open(path))
    assert list(reference) == ["generator", "doc", "cases"], list(reference)
    if reference["doc"] != DOC:
        print("note: the file's doc differs from this script's")
    worst = 0.0
    for kind, cases in reference["cases"].items():
        for case in cases:
            again = recompute(kind, case)
            assert list(again) == list(case), f"{case['name']}: fields differ"
            per_field = {}
            for k in case:
                if k in ("per_batch", "init"):
                    # Nested outputs (per_batch: one dict per batch; init: g and b): check the
                    # whole (keys and lengths too), report each part apart.
                    max_rel_diff(again[k], case[k])
                    rows = case[k] if k == "per_batch" else [case[k]]
                    mine = again[k] if k == "per_batch" else [again[k]]
                    for sub in rows[0]:
                        per_field[f"{k}.{sub}"] = max(max_rel_diff(a[sub], b[sub])
                                                      for a, b in zip(mine, rows))
                else:
                    per_field[k] = max_rel_diff(again[k], case[k])
            inputs = max((v for k, v in per_field.items() if k in INPUT_FIELDS), default=0.0)
            outputs = {k: v for k, v in per_field.items() if k not in INPUT_FIELDS}
            case_worst = max([inputs] + list(outputs.values()))
            worst = max(worst, case_worst)
            fields = ", ".join(f"{k} {v:.1e}" for k, v in outputs.items())
            print(f"{kind}/{case['name']}: largest relative difference {case_worst:.2e} "
                  f"({fields}; inputs {inputs:.1e})")
    print(f"worst {worst:.2e} (tolerance {TOLERANCE:.0e})")
    return worst


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures",
                                                      "norm_pytorch.json"))
    parser.add_argument("--check", metavar="FILE",
                        help="recompute FILE's outputs from its inputs and compare")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.check:
        worst = check(args.check)
        sys.exit(0 if worst <= TOLERANCE else 1)
    cases = generate()
    out = {"generator": f"PyTorch {torch.__version__}, float64, "
                        "scripts/make_norm_reference_vectors.py",
           "doc": DOC, "cases": cases}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f)
        f.write("\n")
    print(f"wrote {args.out} ({sum(len(c) for c in cases.values())} cases)")


if __name__ == "__main__":
    main()
