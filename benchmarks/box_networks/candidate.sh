#!/usr/bin/env bash
# A candidate box network on every benchmark of run.sh and run_external.sh (same cases, every method), written
# to benchmarks/box_networks/NAME/ with its summary.md; the CHAOS run and the external ones side by side (two
# processes of one thread). Evaluation data only: nothing here chooses anything. From the repository root:
#   bash benchmarks/box_networks/candidate.sh MODELS_FOLDER NAME
# (the robot corrects bifseg's result and every method gets those scribbles, --driver auto, so the classical
# methods' rounds 1-3 move with the network too; their round 0 does not)
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: bash benchmarks/box_networks/candidate.sh MODELS_FOLDER NAME" >&2; exit 2; }
export ADAPTIVESEG_MODELS=$1
export BOX_BENCH_OUT=benchmarks/box_networks/$2
source benchmarks/box_networks/common.sh
mkdir -p "$OUT"
bench chaos --dataset $D/chaos-t2spir > "$OUT/chaos.log" 2>&1 &
chaos=$!
bash "$HERE/run_external.sh" > "$OUT/external.log" 2>&1 &
external=$!
wait $chaos  # each on its own: a failed benchmark stops the script (set -e) before the report
wait $external
$PY $HERE/report.py "$OUT"
