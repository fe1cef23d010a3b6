-- EXTRA: the worker's control list. ARGV: worker, info, host, lease_ms, then per lease
-- (id, token, progress report or '', log tail so far or ''): kept only under a current
-- lease. Returns {indexes of lost leases (0-based), commands}.
local worker, now = ARGV[1], now_ms()
redis.call('HSET', WORKERS, worker, ARGV[2])
redis.call('HSET', HOSTS, worker, ARGV[3])
redis.call('ZADD', SEEN, now, worker)
local deadline = now + tonumber(ARGV[4])
local lost = {}
for i = 5, #ARGV, 4 do
  local id = ARGV[i]
  if current(id, ARGV[i + 1]) then
    redis.call('ZADD', RUNNING, 'XX', deadline, id)
    if ARGV[i + 2] ~= '' then redis.call('HSET', PROGRESS, id, ARGV[i + 2]) end
    if ARGV[i + 3] ~= '' then redis.call('HSET', TAILS, id, ARGV[i + 3]) end
  else
    lost[#lost + 1] = (i - 5) / 4
  end
end
local commands = redis.call('LRANGE', EXTRA, 0, -1)
if #commands > 0 then redis.call('DEL', EXTRA) end
return {lost, commands}
