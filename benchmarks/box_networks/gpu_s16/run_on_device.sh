#!/usr/bin/env bash
# One lent-GPU run of scripts/train_box_models.sh from scratch (README.md here), from the repository root of the
# device machine's copy, with .gpu_cache/volumes.npz (volume_cache.py) carried:
#   bash benchmarks/box_networks/gpu_s16/run_on_device.sh MINUTES
# A 20-iteration pre-flight first (the full batch and worker count), so a broken CUDA path costs a minute, not
# the lease. Results under $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_s16_out}; MIN=${1:-7}
mkdir -p "$OUT"
nvidia-smi -L || true
python3 -c "import os, torch, numpy, scipy, skimage; print('torch', torch.__version__, torch.cuda.is_available() and
    torch.cuda.get_device_name(0), 'numpy', numpy.__version__, 'scipy', scipy.__version__, 'skimage',
    skimage.__version__, 'cores', len(os.sched_getaffinity(0)))"
TB="python3 benchmarks/box_networks/gpu_s16/device_train.py .gpu_cache/volumes.npz"
t0=$(date +%s)
df -h /dev/shm || true
CORES=$(python3 -c "import os; print(len(os.sched_getaffinity(0)))")
W=$(( CORES > 4 ? CORES - 2 : 2 ))  # as train_box_models.sh: the batches' shared memory is checked too
if ! $TB --out /tmp/pre/m.json --run-dir /tmp/pre/ck --max-iters 20 --batch 32 --val-every 20 --sample-workers $W \
        --threads 2 > "$OUT/preflight.log" 2>&1; then
    tail -40 "$OUT/preflight.log"; exit 1
fi
echo "pre-flight passed in $(( $(date +%s) - t0 )) s"
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 15 > "$OUT/gpu_util.csv" 2>&1 &
SMI=$!
PY=python3 TRAIN_BOX="$TB" bash scripts/train_box_models.sh --stop-after-minutes "$MIN" --ckpt-minutes 2 \
    > "$OUT/train.log" 2>&1
echo "train_box_models.sh exit $? after $(( $(date +%s) - t0 )) s"
grep -E "validation|best model|installed|Error|error" "$OUT/train.log" | cut -c1-400 | tail -30
grep -E "^iter [0-9]+ loss" "$OUT/train.log" | awk 'NR % 20 == 0' | tail -15
kill $SMI 2>/dev/null
tar czf "$OUT/box2d_gpu.tgz" checkpoints/box2d_scratch runs/box2d 2>/dev/null  # train_box_models.sh's run dir since session 18
ls -la "$OUT"
