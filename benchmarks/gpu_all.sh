#!/usr/bin/env bash
# Every GPU measurement the README's Performance section reports, in one call.
#
#   benchmarks/gpu_all.sh CIFAR10_FOLDER [OUT_DIR]
#
# CIFAR10_FOLDER is the JPEG CIFAR-10 in ImageFolder layout (train/, test/), e.g. extracted
# from ../shared/data/cifar10-jpg.tar.gz. Results land in OUT_DIR (default gpu-results/,
# git-ignored) as .txt (what was printed) and .json (every number):
#   gpu.txt                  the GPU, driver and torch build
#   speedrun.{txt,json}      cifar10-speedrun, 5 seeds: accuracy (mean/min), seconds per seed,
#                            data-to-device and compile warm-up apart (the airbench rules)
#   bench_resnet18.{txt,json}  engine vs the seed-style reference loop, resnet18, bf16, 2 epochs
#   bench_basic_cnn.{txt,json} the same for basic_cnn (the CPU target's model), fp32
#   dashboard_cost.txt       resnet18 images/s with the app's dashboard open vs headless (needs tmux)
# SMOKE=1 runs the same steps on the CPU with tiny subsets, to check the script itself.
set -euo pipefail

data=${1:?usage: benchmarks/gpu_all.sh CIFAR10_FOLDER [OUT_DIR]}
out=${2:-gpu-results}
mkdir -p "$out"
python=${PYTHON:-python}

if [[ "${SMOKE:-0}" == 1 ]]; then
    device=cpu
    speedrun_extra=(--seeds 1 --epochs 1 --train-subset 2048 --test-subset 500 --precision fp32 --no-compile
                    --set 'widths=(8,16,16)' --batch-size 512 --set whiten_samples=256)
    bench_extra=(--quick --max-images 256 --workers 2)
else
    device=cuda
    speedrun_extra=(--seeds 5)
    bench_extra=(--epochs 2 --workers 8)
fi

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
    "$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
} | tee "$out/gpu.txt"

"$python" benchmarks/speedrun_gpu.py "$data" --device "$device" --out "$out/speedrun.json" \
    "${speedrun_extra[@]}" | tee "$out/speedrun.txt"

"$python" -m workbench bench --dataset "$data" --arch resnet18 --device "$device" --batch-size 256 \
    --precision "$([[ $device == cuda ]] && echo bf16 || echo fp32)" \
    "${bench_extra[@]}" --json "$out/bench_resnet18.json" | tee "$out/bench_resnet18.txt"

"$python" -m workbench bench --dataset "$data" --arch basic_cnn --device "$device" --batch-size 128 \
    "${bench_extra[@]}" --json "$out/bench_basic_cnn.json" | tee "$out/bench_basic_cnn.txt"

# The app's training thread shares the GIL with drawing: how much does the dashboard cost on a GPU?
if command -v tmux > /dev/null; then
    WORKBENCH="${WORKBENCH:-$python -m workbench}" PYTHON="$python" benchmarks/dashboard_cost.sh \
        --dataset "$data" --arch "$([[ $device == cuda ]] && echo resnet18 || echo linear)" --epochs 1 \
        --device "$device" --data-dir "$out/data" | tee "$out/dashboard_cost.txt"
else
    echo "tmux not found: dashboard cost not measured" | tee "$out/dashboard_cost.txt"
fi

echo "results in $out/"
