-- ARGV: force ('1' or '0'), job ids. Failed or cancelled jobs (with force, done ones
-- too) go back to pending with a fresh attempt 1; their result and logs go.
local again = {}
local force = ARGV[1] == '1'
for i = 2, #ARGV do
  local id = ARGV[i]
  local state = redis.call('HGET', STATE, id)
  if state == 'failed' or state == 'cancelled' or (force and state == 'done') then
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
