"""Every tunable in one place, with its unit in the name and why it has its value."""

from __future__ import annotations

# A worker whose heartbeat has not changed for this long (on the observer's own
# monotonic clock) is judged dead and its leases are taken over.
LEASE_S = 30.0

# How often a worker renews its leases and updates the registry; a few beats
# fit in one lease so one slow write does not cost a takeover.
HEARTBEAT_S = 5.0

# `reap()` reports every reap of at least this long ago (or of the last lease, if longer),
# whoever did it: live workers hear within one lease (they beat every lease_s/4), and a
# worker (re)started on a dead worker's host shortly after still kills its orphans.
REAPED_KEEP_S = 60.0
# Reap records kept at most (memory); a mass death beyond this reports the newest ones.
REAPED_KEEP = 10_000

# Total attempts a job gets when its worker keeps dying under it (poison pill cap,
# like HyperQueue's crash limit and Dask's allowed-failures).
MAX_ATTEMPTS = 3

# Extra attempts for a job that ran and failed (non-zero exit); 0 = fail at once.
RETRIES = 0

# After a timeout or a stop, a job's process group gets SIGTERM, then SIGKILL
# after this grace period.
KILL_GRACE_S = 5.0

# Idle workers poll a queue that cannot block; the delay doubles from the
# minimum to the maximum while nothing comes.
POLL_MIN_S = 0.005
POLL_MAX_S = 0.5

# A worker looks for new drop-in job files in the queue folder at most this often.
SCAN_S = 1.0

# The folder queue makes finished results durable in batches, one sync at most this
# often (see queue/folder/groupcommit.py): a result is visible at once, durable this much later.
GROUP_COMMIT_S = 0.05

# How many pending names the folder queue reads from the directory at once;
# claim cost depends on this, not on how many jobs wait.
CLAIM_BATCH = 256

# Interpreters for script jobs, chosen by file extension (configurable per queue).
INTERPRETERS: dict[str, list[str]] = {
    ".py": ["python3"],
    ".sh": ["bash"],
    ".m": ["octave", "--no-gui", "--quiet"],
    ".R": ["Rscript"],
    ".r": ["Rscript"],
    ".jl": ["julia"],
}

# Job description files (fjd-style INI and TOML).
JOBFILE_SUFFIXES = (".ini", ".toml")
# A job file's log beside it: shoal's NAME.EXT.log; a folder's queue.toml may say
# log_name = "{stem}.log" (the old job-folder tools' NAME.log for NAME.py).
LOG_NAME = "{name}.log"
OLD_LOG_NAME = "{stem}.log"

# -- network queue (tcp://, shoal serve) -------------------------------------------------

# Where `shoal serve` listens unless --bind asks for more: this machine only.
BIND = "tcp://127.0.0.1:0"

# Largest message the coordinator accepts; a bigger one drops the connection.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# A job's log travels to the coordinator with its result; longer logs keep their end
# (a queue's `log_cap_bytes` setting; logs on a local or shared disk are not cut unless
# it is set).
MAX_SHIPPED_LOG_BYTES = 8 * 1024 * 1024

# A running job's log so far travels with each beat (when it grew), at most its last
# this many bytes, so `shoal logs` shows a running job over a network queue too.
RUNNING_LOG_TAIL_BYTES = 64 * 1024

# A connection must finish the CurveZMQ handshake this fast or it is dropped.
HANDSHAKE_S = 5.0

# ZMTP heartbeats: a peer silent for the timeout is disconnected (then reconnects).
NET_HEARTBEAT_S = 2.0
NET_HEARTBEAT_TIMEOUT_S = 6.0

# A request with no reply is sent again after this long (plus any wait it asked for);
# the coordinator answers a repeat from its reply cache, so resends never act twice.
RESEND_S = 2.0

# How long a client keeps trying before it reports the coordinator unreachable.
PATIENCE_S = 120.0

# How many recent replies the coordinator keeps to answer repeated requests.
REPLY_CACHE = 100_000

# -- Python calls -----------------------------------------------------------------------

# A call whose pickled function (with what it captures) or arguments pass this size gets
# a warning, once per function: a function travels once per queue, but arguments travel
# with every call, and either is cheaper as a file path the call reads itself. 4 MiB
# pickles and ships in a few ms; past it the cost starts to show next to a call's own.
LARGE_CALL_BYTES = 4 * 1024 * 1024

# Each call interpreter keeps unpickled functions by digest, least recently used first
# out, within this many pickled bytes; the latest function is kept whatever its size,
# so calls of one big function load it once.
CALLHOST_FUNCTION_BYTES = 32 * 1024 * 1024
