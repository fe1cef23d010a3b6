"""The fault matrix (shared RELIABILITY.md 5.2) as one suite run on every backend.

Each test is one row: a fault injected into real processes (`shoal work`, `shoal serve`,
redis-server, a submitting process, a TCP proxy) at points drawn from a seeded random
generator, on a fresh queue per iteration, on each backend it applies to (memory:// is
left out: no other process can reach it). The history is external: one
marker file per real execution, and the submitter's own `invoke`/`ok` log. The checker
(history.py) counts lost, duplicated and unexpected jobs, executions per job, failures
without a reason or of jobs not meant to fail, orphaned job processes, and the recovery
time (fault -> the jobs running at the fault are final again).

Modes (environment variables):

    (none)                      short mode, for CI: 1 iteration per row (~3 min)
    SHOAL_FAULTS_LONG=1         long mode: 50 iterations per row (about 2.5 hours in one
                                process; docs/reliability.md ran it as 6 processes, 32 min)
    SHOAL_FAULTS_ITERATIONS=N   N iterations per row (overrides both)
    SHOAL_FAULTS_SEED=S         replay: the seed is printed in the pytest header and by
                                every row (`-s` shows it; a failure message names it)
    SHOAL_FAULTS_REPORT=FILE    append one JSON line per row and backend; then
                                `python -m tests.faults.table FILE` prints the markdown
                                table of docs/reliability.md

    SHOAL_FAULTS_LONG=1 SHOAL_FAULTS_REPORT=/tmp/f.jsonl python -m pytest -q tests/faults

Rows here: worker SIGKILL mid-job (1), poison job (1b), worker SIGSTOP past its lease
with a second worker (2), network partition through a proxy (2b; tcp, Redis), all
workers and the submitter SIGKILLed and restarted, coordinator SIGKILL + restart (3; tcp),
coordinator / redis-server SIGSTOP past the lease, redis-server SIGKILL + restart with
appendonly (4), worker clock +-600 s with libfaketime (9; tests/faketime.py).
Elsewhere: disk full (5: tests/test_disk_full.py), the coordinator's clock pausing or
jumping (tests/test_lease_pause_coordinator.py), half-written and malformed job files
(6, 7: tests/test_folder_faults.py, the fuzz tests), duplicate submission (8:
tests/conformance/test_contract.py), forged clients and random bytes on the socket
(11, 12: tests/test_net_security.py); many clients (10) is a benchmark.
"""
