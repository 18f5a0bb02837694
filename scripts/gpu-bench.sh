#!/bin/sh
# bn-exp's training step on a GPU beside PyTorch's, on the same machine, in one invocation (so
# the ratios compare like with like). Needs a build with `--features gpu`, a Vulkan driver
# (scripts/vulkan-local.sh, or the GPU's own), and PyTorch with CUDA for the comparison.
#   scripts/gpu-bench.sh [BN_EXP_BINARY] [REPS]
# Prints each workload's median step with the backend and device it ran on, PyTorch's on
# `cuda`, and their ratios; writes gpu-bench.json.
set -eu
bin=${1:-target/release/bn-exp}
reps=${2:-200}
"$bin" bench --device gpu --only mlp,mlp-bn,cnn,cnn-bn,inception,inception-bn --reps "$reps" --compare-pytorch \
    --json gpu-bench.json
