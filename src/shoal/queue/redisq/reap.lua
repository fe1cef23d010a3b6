-- ARGV: keep_ms, most records to report, default max_attempts. Returns the recent reaps
-- (prelude.lua's reap).
return reap(tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
