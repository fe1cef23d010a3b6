-- KEYS[19]: the worker's control list. ARGV: worker, info, host, lease_ms, then
-- (id, token) per lease. Returns {indexes of lost leases (0-based), commands}.
local worker, now = ARGV[1], now_ms()
redis.call('HSET', WORKERS, worker, ARGV[2])
redis.call('HSET', HOSTS, worker, ARGV[3])
redis.call('ZADD', SEEN, now, worker)
local deadline = now + tonumber(ARGV[4])
local lost = {}
for i = 5, #ARGV, 2 do
  local id = ARGV[i]
  if current(id, ARGV[i + 1]) then
    redis.call('ZADD', RUNNING, 'XX', deadline, id)
  else
    lost[#lost + 1] = (i - 5) / 2
  end
end
local commands = redis.call('LRANGE', KEYS[19], 0, -1)
if #commands > 0 then redis.call('DEL', KEYS[19]) end
return {lost, commands}
