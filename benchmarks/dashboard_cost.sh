#!/usr/bin/env bash
# Training speed with the dashboard open vs headless: alternates `workbench train` and the app
# (in tmux, 120x40, `s` pressed) on the same settings, and prints each run's epoch images/s
# from its metrics.jsonl (REPS pairs, default 3), then the ratio of the medians. Arguments are train
# flags; the default is basic_cnn on shapes, CPU.
#
#   benchmarks/dashboard_cost.sh --dataset ~/data/cifar10 --arch basic_cnn --epochs 1 --device cpu
set -euo pipefail
workbench=${WORKBENCH:-workbench}
python=${PYTHON:-python}
args=("$@")
(( ${#args[@]} )) || args=(--dataset shapes --arch basic_cnn --epochs 2 --device cpu)
out=$(mktemp -d)
trap 'tmux kill-session -t wb-dash-$$ 2>/dev/null || true; rm -rf "$out"' EXIT
images_per_s() {
    "$python" -c 'import json, sys
records = [json.loads(line) for line in open(sys.argv[1])]
print(round([r for r in records if r.get("type") == "epoch"][-1]["images_per_s"]))' "$1"/*/metrics.jsonl
}
headless=() dashboard=()
for rep in $(seq 1 "${REPS:-3}"); do
    $workbench train "${args[@]}" --runs-dir "$out/headless$rep" > "$out/headless$rep.log" 2>&1
    headless+=("$(images_per_s "$out/headless$rep")")
    echo "headless  $rep: ${headless[-1]} images/s"
    tmux new -d -s wb-dash-$$ -x 120 -y 40 "$workbench ${args[*]} --runs-dir $out/app$rep"
    sleep 5
    tmux send-keys -t wb-dash-$$ s
    until grep -qs -E '^(finished|failed)' "$out"/app$rep/*/status; do sleep 1; done
    tmux send-keys -t wb-dash-$$ q
    sleep 1
    tmux kill-session -t wb-dash-$$ 2>/dev/null || true
    dashboard+=("$(images_per_s "$out/app$rep")")
    echo "dashboard $rep: ${dashboard[-1]} images/s"
done
"$python" -c 'import statistics, sys
h, d = (list(map(float, part.split())) for part in sys.argv[1:3])
print(f"median headless {statistics.median(h):,.0f}, median dashboard {statistics.median(d):,.0f} images/s: "
      f"dashboard/headless {statistics.median(d) / statistics.median(h):.3f}")' "${headless[*]}" "${dashboard[*]}"
