#!/bin/bash
# Everything a lent GPU machine is for, as one script (DEVELOPERS.md, "Timing on a real GPU"):
# the Vulkan loader carried in .gl/, the adapter, 2,000 steps of the paper's MLP with BN on the
# GPU and on the CPU (their evaluations side by side), then scripts/gpu-bench.sh against PyTorch
# on CUDA. Writes what it measured under $OUT (the device tool's folder), else under ./gpu-out.
#   scripts/gpu-session.sh BN_EXP_BINARY[.xz] [REPS]
# A binary built with `--features gpu` is over 100 MB even stripped, more than a run may carry;
# carry it compressed with xz and this script unpacks it (with Python, which the machine has).
set -u
bin=${1:?usage: scripts/gpu-session.sh BN_EXP_BINARY[.xz] [REPS]}
reps=${2:-200}
out=${OUT:-gpu-out}
mkdir -p "$out"
for f in .gl/*.deb; do [ -f "$f" ] && dpkg -x "$f" /; done
ldconfig
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$icd" ] && export VK_DRIVER_FILES=$icd
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
    | tee -a "$out/gpu.txt"
case "$bin" in
  *.xz)
    python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
        "$bin" /tmp/bn-exp-gpu
    chmod +x /tmp/bn-exp-gpu
    bin=/tmp/bn-exp-gpu ;;
esac
for dev in gpu cpu; do
  SECONDS=0
  timeout 300 "$bin" train --config configs/mnist_mlp_sigmoid_bn.json --device "$dev" \
      --set steps=2000 --set eval_every=500 --out "/tmp/gpu-session-$dev" --force -q 2>&1 \
      | tail -3 | tee -a "$out/train.txt"
  echo "$dev: $SECONDS s wall" | tee -a "$out/train.txt"
  cp "/tmp/gpu-session-$dev/metrics.jsonl" "$out/metrics-$dev.jsonl" 2>/dev/null
done
timeout 400 scripts/gpu-bench.sh "$bin" "$reps" 2>&1 | tee "$out/gpu-bench.log"
cp gpu-bench.json "$out/" 2>/dev/null
echo "gpu-session: done"
