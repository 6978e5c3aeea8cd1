#!/bin/bash
# Time per training step of each AS-VAE kind with the defaults (R1 on the critics) and
# with gradient_penalty=0: the second of 2 epochs x 100 steps, batch 100, planar flow
# of length 10, dynamically binarised MNIST (docs/RESULTS.md, "Cost of R1").
# Usage: benchmarks/r1_cost.sh MNIST_MANUAL_DIR OUT_DIR   (run from the repository root)
set -euo pipefail
manual_dir=${1:?the directory holding the MNIST files, e.g. ../shared/data/mnist}
out=${2:?a directory for the runs and logs}
mkdir -p "$out"
for kind in asvae_r asvae asvae_g; do
  for gp in default 0; do
    extra=()
    if [ "$gp" = 0 ]; then extra=(--objective gradient_penalty=0); fi
    dir="$out/${kind}_gp${gp}"
    rm -rf "$dir"
    python -m trainers.train --model "$kind" --manual-dir "$manual_dir" --binarize dynamic \
      --epochs 2 --steps-per-epoch 100 --validation-steps 2 --batch-size 100 \
      --flow-length 10 --learning-rate 1e-3 --num-images 0 --no-export --run-dir "$dir" \
      "${extra[@]}" > "$dir.log" 2>&1
    echo "$kind gradient_penalty=$gp: $(grep -a '100/100' "$dir.log" | tail -1 | grep -o '[0-9]*ms/step')"
  done
done
