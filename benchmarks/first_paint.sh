#!/usr/bin/env bash
# Seconds from launching the app in a real terminal (tmux, 120x40) until the setup screen shows
# the architecture table. Extra arguments go to `workbench`, e.g. train flags that fill the form.
#
#   benchmarks/first_paint.sh
#   benchmarks/first_paint.sh --dataset shapes --arch basic_cnn --epochs 1
set -euo pipefail
workbench=${WORKBENCH:-workbench}
session=wb-first-paint-$$
start=$(date +%s.%N)
tmux new -d -s "$session" -x 120 -y 40 "$workbench $*"
trap 'tmux kill-session -t "$session" 2>/dev/null || true' EXIT
until tmux capture-pane -t "$session" -p 2>/dev/null | grep -q "basic_cnn"; do
    sleep 0.02
    if (( $(echo "$(date +%s.%N) - $start > 60" | bc) )); then echo "no setup screen after 60 s" >&2; exit 1; fi
done
echo "first paint: $(echo "$(date +%s.%N) - $start" | bc | xargs printf '%.2f') s"
tmux send-keys -t "$session" q
