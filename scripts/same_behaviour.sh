#!/usr/bin/env bash
# Do two versions of bn-exp train exactly the same? Runs the shipped configs with one thread under
# each version and compares metrics.jsonl and activations.jsonl byte for byte, apart from
# elapsed_s (wall time):
#   mnist_mlp_sigmoid_bn and mnist_mlp_sigmoid_nobn, 5,000 steps;
#   the MLP with Layer Norm, Group Norm, Batch Renorm and Weight Norm, 1,000 steps each;
#   cifar10_cnn_relu_bn, 300 steps, evaluation every 100 (needs CIFAR-10: --data-dir or
#   BN_EXP_DATA_DIR; skipped with a note when neither is given).
#
# Usage:
#   scripts/same_behaviour.sh REV_A REV_B      # two commits, each built in a git worktree and run
#                                              # with the configs of its own commit
#   scripts/same_behaviour.sh BIN_A BIN_B      # two bn-exp binaries, both run with this checkout's
#                                              # configs
# Options: --data-dir DIR (CIFAR-10), --keep (leave the runs in the work folder).
# Exit status 0 when every file is identical, 1 when one differs, 2 on a usage or build error.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
data_dir=${BN_EXP_DATA_DIR:-}
keep=0
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --data-dir) data_dir=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) args+=("$1"); shift ;;
  esac
done
[ ${#args[@]} -eq 2 ] || { sed -n '2,15p' "$0" >&2; exit 2; }
work=$(mktemp -d "${TMPDIR:-/tmp}/bn-exp-same.XXXXXX")
# Building a revision writes its binary to target/release/bn-exp; put this checkout's back.
[ -f "$repo/target/release/bn-exp" ] && cp -p "$repo/target/release/bn-exp" "$work/bn-exp-checkout"
cleanup() {
  [ -f "$work/bn-exp-checkout" ] && cp -p "$work/bn-exp-checkout" "$repo/target/release/bn-exp"
  for wt in "$work"/src-*; do [ -d "$wt" ] && git -C "$repo" worktree remove --force "$wt" >/dev/null 2>&1; done
  [ "$keep" = 1 ] && echo "runs kept in $work" || rm -rf "$work"
}
trap cleanup EXIT

# Sets bin_<tag> and configs_<tag> for a file path or a git revision. A revision is built with
# the repository's target folder, so only bn-exp itself is compiled again, and runs with the
# configs of that revision (their format may differ between versions).
prepare() {
  local what=$1 tag=$2
  if [ -x "$what" ] && [ -f "$what" ]; then
    printf -v "bin_$tag" '%s' "$what"
    printf -v "configs_$tag" '%s' "$repo/configs"
    return
  fi
  local wt="$work/src-$tag"
  git -C "$repo" worktree add --detach "$wt" "$what" >/dev/null 2>&1 \
    || { echo "not a binary or a git revision: $what" >&2; exit 2; }
  CARGO_TARGET_DIR="$repo/target" cargo build --release --quiet --manifest-path "$wt/Cargo.toml" >&2 \
    || { echo "cannot build $what" >&2; exit 2; }
  cp "$repo/target/release/bn-exp" "$work/bn-exp-$tag"
  printf -v "bin_$tag" '%s' "$work/bn-exp-$tag"
  printf -v "configs_$tag" '%s' "$wt/configs"
}

prepare "${args[0]}" a
prepare "${args[1]}" b

# Each run: a label (its folder), the shipped config, and --set overrides.
short="--set steps=1000 --set eval_every=250"
runs=(
  "mlp_bn mnist_mlp_sigmoid_bn --set steps=5000"
  "mlp_nobn mnist_mlp_sigmoid_nobn --set steps=5000"
  "mlp_layer mnist_mlp_sigmoid_bn $short --set norm.kind=layer"
  "mlp_group mnist_mlp_sigmoid_bn $short --set norm.kind=group"
  "mlp_renorm mnist_mlp_sigmoid_bn $short --set norm.kind=renorm"
  "mlp_weight mnist_mlp_sigmoid_bn $short --set norm.kind=weight"
)
if [ -n "$data_dir" ]; then
  runs+=("cnn_bn cifar10_cnn_relu_bn --set steps=300 --set eval_every=100")
else
  echo "note: no CIFAR-10 (give --data-dir or BN_EXP_DATA_DIR); cifar10_cnn_relu_bn is not compared"
fi

status=0
for run in "${runs[@]}"; do
  read -r label name sets <<<"$run"
  # MNIST is the checkout's embedded copy; CIFAR-10 comes from --data-dir.
  run_data=$repo/data
  case $name in cifar*) run_data=$data_dir ;; esac
  for side in a b; do
    bin=$bin_a configs=$configs_a
    [ $side = b ] && bin=$bin_b configs=$configs_b
    # A diverged run (exit 3) still has records to compare; any other failure stops here.
    rc=0
    # shellcheck disable=SC2086
    RAYON_NUM_THREADS=1 "$bin" train --quiet --config "$configs/$name.json" $sets \
      --data-dir "$run_data" --out "$work/$side/$label" >/dev/null || rc=$?
    case $rc in 0|3) ;; *) echo "$label failed under side $side (exit $rc)" >&2; exit 2 ;; esac
  done
  for file in metrics.jsonl activations.jsonl; do
    strip() { sed -E 's/"elapsed_s":[^,}]*//' "$1"; }
    if cmp -s <(strip "$work/a/$label/$file") <(strip "$work/b/$label/$file"); then
      echo "same       $label/$file ($(wc -l <"$work/a/$label/$file") lines)"
    else
      echo "DIFFERENT  $label/$file"
      status=1
    fi
  done
done
exit $status
