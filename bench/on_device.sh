#!/bin/sh
# The GPU checks of issues 3 and 4 in one device call (10 minutes at most), the most telling first:
#   1. smoke tests on the digits of the two captured training steps (by-hand CUDA graphs, torch.compile) and the
#      GPU tests of the CUDA-graph step;
#   2. bench/train_speed.py: aekit (each way of running its step) vs the reference vs the floor, memory, each model's
#      epoch, the test loss after 10 epochs;
#   3. bench/eval_speed.py: the k=5000 estimate over the 10,000 test images;
#   4. bench/quality_mnist.py's full mode with --resume, for the time left: each finished model is saved in
#      bench/quality_full.json, so a second call (or a later session, once that file is committed) goes on from it;
#      the model it was training when time ran out left its checkpoint in bench/runs/, which comes back too.
#
# Here, once (the device machine cannot see ../shared; .mnist/ is git-ignored):
#     mkdir -p .mnist && cp ../shared/data/mnist/*.gz .mnist/
# Then call the device tool's run with command "sh bench/on_device.sh", carry [".mnist", "bench/runs"], timeout_s
# 590, and copy RESULTS.md and quality_full.json from what comes back into bench/ (the logs beside them hold the
# speed figures) and runs/ into bench/runs/, for the next call to carry and go on with.
set -u
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
data=${MNIST_DIR:-.mnist}
out=${OUT:-/tmp/aekit-device}
budget=${BUDGET_S:-560}  # seconds for the whole script, inside the call's timeout
started=$(date +%s)
left() { echo $((budget - ($(date +%s) - started))); }
mkdir -p "$out"

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; date -u
  python3 -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, torch.version.cuda)"
} > "$out/device.txt" 2>&1
cat "$out/device.txt"

# Smoke tests of the two captured steps; the quality run uses --compile if it works, else --cuda-graph, else eager.
step=eager
for flag in --cuda-graph --compile; do
    rm -rf /tmp/aekit-smoke
    if timeout 120 python3 -m aekit train --dataset digits --model aae --epochs 5 --batch-size 100 $flag \
            --no-progress --out /tmp/aekit-smoke > "$out/smoke$flag.log" 2>&1; then
        step=${flag#--}
    else
        echo "the $flag step failed (smoke$flag.log):"; tail -5 "$out/smoke$flag.log"
    fi
done
echo "quality runs with --step $step"
python3 -c "import pytest" 2>/dev/null && timeout 150 python3 -m pytest -q -x tests/test_parallel_and_precision.py \
    -k cuda 2>&1 | tail -15 | tee "$out/pytest-cuda.log"

timeout 200 python3 bench/train_speed.py --data-dir "$data" --epochs 3 --models --accuracy 2>&1 | tee "$out/train_speed.log"
timeout 90 python3 bench/eval_speed.py --data-dir "$data" 2>&1 | tee "$out/eval_speed.log"
if [ "$(left)" -gt 60 ]; then
    timeout "$(($(left) - 20))" python3 bench/quality_mnist.py --data-dir "$data" --resume --step $step 2>&1 \
        | tee "$out/quality.log"
fi
cp bench/RESULTS.md "$out/"
[ -f bench/quality_full.json ] && cp bench/quality_full.json "$out/"
[ -d bench/runs ] && cp -r bench/runs "$out/"
echo "done in $(($(date +%s) - started)) s"
