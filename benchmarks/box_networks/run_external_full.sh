#!/usr/bin/env bash
# run_external.sh on every evaluation case instead of its subsets: all 30 held-out hippocampus subjects, all 10
# operated fetal atlases (never trained on; their held-out tissues cortex 5 and corpus callosum 8), all 7
# tumour scans of the 4 patients on every slice. The cord has only its two validation contrasts (run_external.sh).
# Every method, box only and 3 robot rounds, one thread each. Run from the repository root, one or more parts:
#   BOX_BENCH_OUT=benchmarks/box_networks/<folder> bash benchmarks/box_networks/run_external_full.sh hippocampus
#   ... run_external_full.sh tumour fetal          (two parts side by side use the 2 cores)
set -euo pipefail
# its folders have run_external.sh's names: never replace that script's records in this folder
if [ -z "${BOX_BENCH_OUT:-}" ] || [ $# -eq 0 ]; then
  echo "usage: BOX_BENCH_OUT=benchmarks/box_networks/<folder> bash $0 hippocampus|tumour|fetal ..." >&2; exit 2
fi
source benchmarks/box_networks/common.sh
for part in "$@"; do
  case $part in
    hippocampus)
      HIP=$($PY -c "import json; print(','.join(json.load(open('InteractiveRefine/Resources/Splits/msd_hippocampus.json'))['test']))")
      bench hippocampus --dataset $D/msd-hippocampus --cases "$HIP" --slice-step 4 ;;
    tumour)
      bench tumour --dataset $D/tcia-brain-tumor-progression ;;
    fetal)
      AGES=$($PY -c "from InteractiveRefineLib.training.box_sources import FETAL_EVAL_AGES as A; print(' '.join(A))")
      $PY $HERE/fetal_view.py runs/views/fetal_all $AGES
      bench fetal_cortex_cc --dataset runs/views/fetal_all --labels 5,8 --slice-step 12 ;;
    *) echo "unknown part $part: hippocampus, tumour or fetal" >&2; exit 2 ;;
  esac
done
