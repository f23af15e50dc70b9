#!/usr/bin/env bash
# Run make targets side by side ("lanes"), each into its own log under artifacts/lanes/, and say
# when each one ends. When all have ended, print the logs: passed lanes first, failed lanes last,
# then a summary naming the failed ones, so that the end of the output (all a CI page may keep)
# shows what failed and why. Exit status: 0 when every lane passed, else 1.
#
#   tools/lanes.sh molecule checks
set -uo pipefail

make_cmd=${MAKE:-make}
log_dir=${LANES_LOG_DIR:-artifacts/lanes}
mkdir -p "$log_dir"

declare -A pid rc seconds
start=$(date +%s)
for lane in "$@"; do
  "$make_cmd" --no-print-directory "$lane" >"$log_dir/$lane.log" 2>&1 &
  pid[$lane]=$!
  echo "lane $lane: started (log $log_dir/$lane.log)"
done

# Wait for whichever lane ends first, so each end is reported when it happens.
left=("$@")
while ((${#left[@]})); do
  wait -n "${pid[@]}" 2>/dev/null || true
  still=()
  for lane in "${left[@]}"; do
    if kill -0 "${pid[$lane]}" 2>/dev/null; then
      still+=("$lane")
    else
      wait "${pid[$lane]}"
      rc[$lane]=$?
      seconds[$lane]=$(($(date +%s) - start))
      echo "lane $lane: $([ "${rc[$lane]}" = 0 ] && echo passed || echo "FAILED (exit ${rc[$lane]})") after ${seconds[$lane]} s"
    fi
  done
  left=("${still[@]+"${still[@]}"}")
done

failed=()
for lane in "$@"; do [ "${rc[$lane]}" = 0 ] || failed+=("$lane"); done
for lane in "$@"; do
  [ "${rc[$lane]}" = 0 ] || continue
  echo "===== lane $lane (passed after ${seconds[$lane]} s): $log_dir/$lane.log"
  cat "$log_dir/$lane.log"
done
for lane in "${failed[@]+"${failed[@]}"}"; do
  echo "===== lane $lane (FAILED, exit ${rc[$lane]}, after ${seconds[$lane]} s): $log_dir/$lane.log"
  cat "$log_dir/$lane.log"
done
if ((${#failed[@]})); then
  echo "===== FAILED lane(s): ${failed[*]} (their logs are printed just above, last)"
  exit 1
fi
echo "===== every lane passed: $*"
