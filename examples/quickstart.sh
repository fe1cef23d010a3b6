#!/usr/bin/env bash
# shoal's main example, end to end on one machine: folder queues and local workers.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
cd "$work"
echo "== working in $work"

echo "== 1. like GNU parallel: one job per argument, a folder queue under ./.shoal-run"
shoal run --no-progress 'echo {} squared is $(( {} * {} ))' ::: 1 2 3 4 5 6 7 8
shoal results .shoal-run --limit 4          # in input order; --format csv|json for scripts
shoal logs .shoal-run '#3'                  # job number 3's output (quoted: # starts a comment)
echo "== running it again skips what is done"
shoal run --no-progress 'echo {} squared is $(( {} * {} ))' ::: 1 2 3 4 5 6 7 8

echo "== 2. a drop-in folder: job files (fjd-style .ini) run by 'shoal work' on any machine"
mkdir sweep
for seed in 1 2 3 4; do
  printf '[control]\nexecutable = python3 %s/simulate.py\n\n[params]\nseed = %s\nsteps = 1000\n' \
    "$here" "$seed" > "sweep/seed-$seed.ini"
done
shoal work sweep --drain --slots 2
cat sweep/*.log
shoal status sweep

echo "== 3. machines that share no folder: the first run of a script serves, later runs work"
SHOAL_SESSION_DIR="$work/sessions" python3 "$here/session_sweep.py" pi
echo "== (the status file another machine needs: $work/sessions/pi/status.json, mode 0600)"
