#!/usr/bin/env bash
# Box networks (issue 11): every method, box only and 3 robot rounds, on the CHAOS test patients (unseen
# kidneys; seen liver/spleen), then on external structures the network never trained on (run_external.sh).
# Evaluation data only: nothing here chooses anything. From the repository root:
#   bash benchmarks/box_networks/run.sh && python benchmarks/box_networks/report.py
set -euo pipefail
source benchmarks/box_networks/common.sh
bench chaos --dataset $D/chaos-t2spir
bash "$HERE/run_external.sh"
