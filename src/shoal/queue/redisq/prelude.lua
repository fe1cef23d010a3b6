-- Shared by every shoal script (prepended to each): the queue's keys, in the order
-- redisq/keys.py passes them, and the small steps every state change is made of.
-- Every key shares one hash tag, so a queue lives in one Cluster slot.
local SPEC, PAYLOAD, STATE, ATTEMPT, PENDING, WAKE, RUNNING, TOKEN, OWNER, RESULT,
      FAILED, COUNTS, FINALS, REAPED, WORKERS, SEEN, HOSTS, SEQ, LOGS, TAILS, PROGRESS,
      CONFIG, NUMBERS, NUMBERED = unpack(KEYS, 1, 24)
-- NUMBERS: id -> the job's place in submission order; NUMBERED: the last place given.
local EXTRA = KEYS[25]     -- a script's own key (a worker's control list), if any
local WAKE_MAX = 64        -- wake-up tokens kept at most (a woken claimer wakes the next)
local FINALS_MAX = 100000  -- entries kept (about) in the finals stream

-- Milliseconds on the server's clock: the only clock leases are judged by.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The attempt a job is on (1 is not stored: most jobs never need a second).
local function attempt_of(id)
  return tonumber(redis.call('HGET', ATTEMPT, id)) or 1
end

local function set_attempt(id, attempt)
  if attempt == 1 then redis.call('HDEL', ATTEMPT, id)
  else redis.call('HSET', ATTEMPT, id, attempt) end
end

-- A state change, with the counts kept in step (never recounted by scanning).
local function move(id, from, to)
  redis.call('HSET', STATE, id, to)
  redis.call('HINCRBY', COUNTS, from, -1)
  redis.call('HINCRBY', COUNTS, to, 1)
end

-- Let up to n blocked claimers know there is work (they BLPOP the wake list).
local function wake(n)
  local missing = math.min(n, WAKE_MAX) - redis.call('LLEN', WAKE)
  for _ = 1, missing do redis.call('RPUSH', WAKE, 1) end
end

-- The lease is current only while its token is the job's token.
local function current(id, token)
  return redis.call('HGET', TOKEN, id) == token
end

-- A lease ends: its fence, and what its running attempt reported (log tail, progress).
local function end_lease(id)
  redis.call('HDEL', TOKEN, id)
  redis.call('HDEL', OWNER, id)
  redis.call('ZREM', RUNNING, id)
  redis.call('HDEL', TAILS, id)
  redis.call('HDEL', PROGRESS, id)
end

-- The shared config's stamp, handed out with leases (false: no config).
local function config_stamp()
  return redis.call('HGET', CONFIG, 'stamp')
end

-- A final result: recorded, counted, and announced on the finals stream.
local function set_final(id, from, state, record)
  redis.call('HSET', RESULT, id, record)
  move(id, from, state)
  redis.call('XADD', FINALS, 'MAXLEN', '~', FINALS_MAX, '*', 'id', id)
end

-- Lease up to n pending jobs to worker; entries of jobs no longer pending are skipped.
local function claim(worker, n, lease_ms)
  local leases = {}
  local deadline = nil
  while #leases < n do
    local id = redis.call('LPOP', PENDING)
    if not id then break end
    if redis.call('HGET', STATE, id) == 'pending' then
      deadline = deadline or (now_ms() + lease_ms)
      local attempt = attempt_of(id)
      local token = attempt .. '.' .. redis.call('INCR', SEQ)
      move(id, 'pending', 'running')
      redis.call('HSET', TOKEN, id, token)
      redis.call('HSET', OWNER, id, worker)
      redis.call('ZADD', RUNNING, deadline, id)
      leases[#leases + 1] = {id, attempt, token, redis.call('HGET', SPEC, id),
                             redis.call('HGET', PAYLOAD, id),
                             tonumber(redis.call('HGET', NUMBERS, id)) or 0}
    end
  end
  if redis.call('LLEN', PENDING) == 0 then redis.call('DEL', WAKE)
  else wake(1) end
  return leases
end
