-- ARGV: keep_ms, most records to report, default max_attempts.
-- Takes back every lease whose deadline passed (pending with attempt + 1 at its rank,
-- or failed at the cap, ending the jobs waiting for it), logs each in the reaped
-- stream, and returns the recent reaps.
local now, keep_ms = now_ms(), tonumber(ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', RUNNING, '-inf', '(' .. now, 'LIMIT', 0, 1000)
local back = 0
for _, id in ipairs(expired) do
  local worker = redis.call('HGET', OWNER, id) or ''
  local attempt = attempt_of(id)
  local host = redis.call('HGET', HOSTS, worker) or ''
  end_lease(id)
  redis.call('XADD', REAPED, '*', 'job', id, 'worker', worker, 'attempt', attempt,
             'host', host)
  local spec = cjson.decode(redis.call('HGET', SPEC, id))
  if attempt >= (tonumber(spec.max_attempts) or tonumber(ARGV[3])) then
    set_final(id, 'running', 'failed', cjson.encode(
      {job_id = id, state = 'failed', attempt = attempt, worker = worker, lost = true}))
    end_dependants(id, 'failed')
  else
    set_attempt(id, attempt + 1)
    move(id, 'running', 'pending')
    line_up(id, rank_of(id))
    back = back + 1
  end
end
if back > 0 then wake(back) end
local oldest = math.max(0, now - keep_ms)
redis.call('XTRIM', REAPED, 'MINID', oldest)
return redis.call('XRANGE', REAPED, oldest, '+', 'COUNT', tonumber(ARGV[2]))
