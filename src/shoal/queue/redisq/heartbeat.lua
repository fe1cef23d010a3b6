-- A worker's whole heartbeat in one step: its beat, then a reap. EXTRA: the worker's
-- control list. ARGV: reap.lua's (keep_ms, most, default max_attempts), then beat.lua's.
-- Returns {indexes of lost leases, commands, recent reaps}.
-- One script, not two calls: the leases this beat renewed are judged by the same server
-- an instant later, so a worker stalled between two calls (a loaded host) can never
-- take its own live leases back.
local beaten = beat(4)
return {beaten[1], beaten[2], reap(tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))}
