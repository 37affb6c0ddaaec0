# Shared by run.sh, run_external.sh and candidate.sh: every method, box only and 3 robot rounds, one thread.
# Records go to BOX_BENCH_OUT (default: this folder, the shipped network's records); BENCH_ARGS adds options to
# every run (e.g. "--dims 2d" after a change that touches only 2D boxes).
PY=${PY:-.venv/bin/python}
D=../shared/data
HERE=benchmarks/box_networks
OUT=${BOX_BENCH_OUT:-$HERE}
M=bifseg,cnn+crf,cnn,graphcut,random_walker,filled_box
bench() { name=$1; shift; rm -rf "$OUT/$name"; $PY -m InteractiveRefineLib benchmark --out "$OUT/$name" --methods $M --rounds 3 --threads 1 "$@" ${BENCH_ARGS:-}; }
