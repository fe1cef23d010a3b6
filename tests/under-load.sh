#!/usr/bin/env bash
# Run the test suite (or the pytest arguments given) with both cores kept busy, as on a
# loaded CI machine: timing assumptions that hold only on an idle machine fail here.
#   bash tests/under-load.sh                      # the whole suite
#   bash tests/under-load.sh tests/test_redis_faults.py -x
# The load is `stress-ng --cpu N` (apt package stress-ng), else N Python busy loops;
# N = the number of cores unless SHOAL_LOAD_CPUS says otherwise. Stopped by PID at exit.
set -euo pipefail
cd "$(dirname "$0")/.."

cpus=${SHOAL_LOAD_CPUS:-$(nproc)}
pids=()
stop_load() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap stop_load EXIT

if command -v stress-ng >/dev/null; then
    stress-ng --cpu "$cpus" --quiet &
    pids+=($!)
    echo "under-load: stress-ng --cpu $cpus (pid ${pids[0]})" >&2
else
    for _ in $(seq "$cpus"); do
        python -c 'while True: pass' &
        pids+=($!)
    done
    echo "under-load: $cpus Python busy loops (no stress-ng; apt-get install stress-ng)" >&2
fi

python -m pytest -q "$@"
