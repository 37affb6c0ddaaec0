#!/usr/bin/env bash
# Box networks (issue 11): every method, box only and 3 robot rounds, on the CHAOS test patients (unseen
# kidneys; seen liver/spleen) and on external structures the networks never trained on. Evaluation data
# only: nothing here chooses anything. Run from the repository root: bash benchmarks/box_networks/run.sh
set -euo pipefail
PY=${PY:-.venv/bin/python}
D=../shared/data
OUT=benchmarks/box_networks
M=bifseg,cnn+crf,cnn,graphcut,random_walker,filled_box
T="--threads 1"
bench() { name=$1; shift; rm -rf "$OUT/$name"; $PY -m InteractiveRefineLib benchmark --out "$OUT/$name" --methods $M --rounds 3 $T "$@"; }
bench chaos --dataset $D/chaos-t2spir
# External structures (never trained on), a lighter protocol that fits a 2-core session: see run_external.sh
bash "$OUT/run_external.sh"
