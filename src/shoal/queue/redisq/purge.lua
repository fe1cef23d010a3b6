-- No ARGV. Removes every job's records (running leases go with their tokens, so their
-- finish is refused); returns how many jobs there were. Workers, the token counter
-- (SEQ: a new lease never reuses a token) and the config stay. Function blobs stay too.
local removed = redis.call('HLEN', SPEC)
for _, lane in ipairs(redis.call('HKEYS', SHAPES)) do  -- every lane the queue had
  redis.call('DEL', line_key(lane), back_key(lane))
end
redis.call('DEL', SPEC, PAYLOAD, STATE, ATTEMPT, RUNNING, TOKEN, OWNER, RESULT,
           FAILED, COUNTS, FINALS, REAPED, LOGS, TAILS, PROGRESS, NUMBERS, NUMBERED,
           LANES, SHAPES, LANE, RANK, DEPS, UNMET, PREFIX .. 'pending')
return removed
