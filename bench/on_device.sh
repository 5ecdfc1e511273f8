#!/bin/sh
# The GPU checks of issues 3 and 4 in one device call (10 minutes at most), the most telling first, each log written
# to $OUT as it goes:
#   1. bench/train_speed.py: aekit each way of running its step (eager, CUDA graphs by hand, torch.compile, both) vs
#      the reference vs the floor, memory, the test loss after 10 epochs, each model's epoch;
#   2. bench/eval_speed.py: the k=5000 estimate over the 10,000 test images;
#   3. the GPU-only tests (the captured steps train like the eager one, every model; resume across ways);
#   4. bench/quality_mnist.py's full mode with --resume, for the time left, with the fastest step of 1: each finished
#      model is saved in bench/quality_full.json, so a later call (once that file is committed) goes on from it; the
#      model it was training when time ran out left its checkpoint in bench/runs/, which comes back too where the
#      tool allows (files under 16 MiB, 8 in all: the deep conv net's checkpoint is larger, so only its history does).
#
# Here, once (the device machine cannot see ../shared; .mnist/ is git-ignored):
#     mkdir -p .mnist && cp ../shared/data/mnist/*.gz .mnist/
# Then call the device tool's run with command "sh bench/on_device.sh", carry [".mnist", "bench/runs"], timeout_s
# 600, and copy RESULTS.md and quality_full.json from what comes back into bench/ (the logs beside them hold the
# speed figures) and runs/ into bench/runs/, for the next call to carry and go on with.
# PARTS (default "speed tests quality") picks among 1-2, 3 and 4; QUALITY_MODELS (default: the full mode's models)
# names the quality models to train with the time left, and STEP (default: the fastest of 1) how.
set -u
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
data=${MNIST_DIR:-.mnist}
out=${OUT:-/tmp/aekit-device}
budget=${BUDGET_S:-570}  # seconds for the whole script, inside the call's timeout
started=$(date +%s)
left() { echo $((budget - ($(date +%s) - started))); }
mkdir -p "$out"

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv; date -u
  python3 -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, torch.version.cuda)"
} 2>&1 | tee "$out/speed.log"

parts=${PARTS:-speed tests quality}
wants() { case " $parts " in *" $1 "*) ;; *) return 1;; esac; }
if wants speed; then
    timeout 260 python -m bench.train_speed --data-dir "$data" --epochs 3 --accuracy --models 2>&1 \
        | tee -a "$out/speed.log"
    timeout 50 python -m bench.eval_speed --data-dir "$data" 2>&1 | tee -a "$out/speed.log"
fi
if wants tests; then
    timeout 200 python3 -m pytest -v --tb=short -p no:cacheprovider tests/test_parallel_and_precision.py \
        tests/test_batches.py -k "cuda or captured" 2>&1 | grep -v "^W[0-9]" | tee "$out/tests.log"
fi

# The quality run uses STEP, else the step that train_speed found fastest (its line "aekit: aekit-STEP ..."), else
# CUDA graphs.
step=${STEP:-$(sed -n 's/^aekit: aekit-\([a-z+-]*\) .*/\1/p' "$out/speed.log")}
step=${step:-cuda-graph}
if wants quality && [ "$(left)" -gt 60 ]; then
    echo "quality runs with --step $step for $(($(left) - 20)) s"
    timeout "$(($(left) - 20))" python -m bench.quality_mnist --data-dir "$data" --resume --step "$step" \
        ${QUALITY_MODELS:+--models "$QUALITY_MODELS"} 2>&1 | tee "$out/quality.log"
fi
cp bench/RESULTS.md "$out/"
[ -f bench/quality_full.json ] && cp bench/quality_full.json "$out/"
for run in bench/runs/*/; do
    [ -f "$run/checkpoint.pt" ] || continue
    if [ "$(du -k "$run/checkpoint.pt" | cut -f1)" -lt 16000 ]; then
        mkdir -p "$out/runs" && cp -r "$run" "$out/runs/"
    else
        cp "$run/history.csv" "$out/$(basename "$run")-history.csv"
    fi
done
echo "done in $(($(date +%s) - started)) s"
