-- ARGV: job ids. Failed or cancelled jobs go back to pending with a fresh attempt 1.
local again = {}
for _, id in ipairs(ARGV) do
  local state = redis.call('HGET', STATE, id)
  if state == 'failed' or state == 'cancelled' then
    redis.call('HDEL', RESULT, id)
    redis.call('HDEL', LOGS, id)
    for n = 1, attempt_of(id) do  -- a fresh start: the old failed attempts' records go
      redis.call('HDEL', FAILED, id .. '.' .. n)
      redis.call('HDEL', LOGS, id .. '.' .. n)
    end
    set_attempt(id, 1)
    move(id, state, 'pending')
    redis.call('RPUSH', PENDING, id)
    again[#again + 1] = id
  end
end
if #again > 0 then wake(#again) end
return again
