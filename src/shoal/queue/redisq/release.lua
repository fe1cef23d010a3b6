-- ARGV: id, token, failed attempt's record ('' when none), its log ('' when none).
-- Back to pending at the job's rank: untouched, or (failed) with attempt + 1 and the
-- record and log kept as that attempt's. Its dependants keep waiting.
local id = ARGV[1]
if not current(id, ARGV[2]) then return 0 end
end_lease(id)
move(id, 'running', 'pending')
if ARGV[3] ~= '' then
  local attempt = attempt_of(id)
  redis.call('HSET', FAILED, id .. '.' .. attempt, ARGV[3])
  if ARGV[4] ~= '' then redis.call('HSET', LOGS, id .. '.' .. attempt, ARGV[4]) end
  set_attempt(id, attempt + 1)
end
line_up(id, rank_of(id))
wake(1)
return 1
