-- Shared by every shoal script (prepended to each): the queue's keys, in the order
-- redisq/keys.py passes them, and the small steps every state change is made of.
-- Every key shares one hash tag, so a queue lives in one Cluster slot.
local SPEC, PAYLOAD, STATE, ATTEMPT, WAKE, RUNNING, TOKEN, OWNER, RESULT,
      FAILED, COUNTS, FINALS, REAPED, WORKERS, SEEN, HOSTS, SEQ, LOGS, TAILS, PROGRESS,
      CONFIG, NUMBERS, NUMBERED, LANES, SHAPES, LANE, RANK, DEPS, UNMET = unpack(KEYS, 1, 29)
-- NUMBERS: id -> the job's place in submission order; NUMBERED: the last place given.
-- Scheduling (the rules are shoal/queue/scheduling.py's):
-- Each lane's pending jobs: `line:LANE`, a list of ids as submitted (seq order; 18
--   bytes a job), and `back:LANE`, a zset id -> rank of those put back in line since
--   (released, reaped, retried, released by their dependencies). Both keys are named
--   here from the queue's prefix: same hash tag, same slot as the declared keys.
-- LANES: the lanes that may have pending jobs, scored -priority (highest first);
-- SHAPES: lane -> msgpack [needs (cpus included), labels]: what each of its jobs takes;
-- LANE: id -> lane, RANK: id -> rank, kept only where not the default ('p0', the seq);
-- DEPS: dependency edges, members 'DEP\0DEPENDANT' of one lex zset, kept until purge;
-- UNMET: id -> how many of its dependencies are not done (WAITING jobs only).
local EXTRA = KEYS[30]     -- a script's own key (a worker's control list), if any
local PREFIX = string.sub(SPEC, 1, -5)  -- 'shoal:{NAME}:'
local function line_key(lane) return PREFIX .. 'line:' .. lane end
local function back_key(lane) return PREFIX .. 'back:' .. lane end
local WAKE_MAX = 64        -- wake-up tokens kept at most (a woken claimer wakes the next)
local FINALS_MAX = 100000  -- entries kept (about) in the finals stream
local RANK_SHIFT = 2 ^ 40  -- a retried-first rank is seq - 2^40 (scheduling.FIRST)

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
  if from then redis.call('HINCRBY', COUNTS, from, -1) end  -- nil: a new job
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


-- -- the lines of pending jobs: a list and a zset per lane ----------------------------

local function seq_of(id)
  return tonumber(redis.call('HGET', NUMBERS, id)) or 0
end

-- A job's rank within its priority: its seq, unless a retry put it first.
local function rank_of(id)
  return tonumber(redis.call('HGET', RANK, id)) or seq_of(id)
end

local function lane_of(id)
  return redis.call('HGET', LANE, id) or 'p0'
end

-- A lane's score in LANES: its priority, read from its name ('p5', 'p-2-1f3a...').
local function lane_score(lane)
  return -tonumber(string.match(lane, '^p(%-?%d+)'))
end

-- A job goes back in line at `rank` (the caller made it pending).
local function line_up(id, rank)
  if rank == seq_of(id) then redis.call('HDEL', RANK, id)
  else redis.call('HSET', RANK, id, rank) end
  local lane = lane_of(id)
  redis.call('ZADD', back_key(lane), rank, id)
  redis.call('ZADD', LANES, lane_score(lane), lane)
end

-- A pending job leaves the line without being claimed (a cancel). An entry of its lane's
-- list stays, dropped when it reaches the head.
local function leave_line(id)
  redis.call('ZREM', back_key(lane_of(id)), id)
end

-- The lane's next job: {id, rank, true if from the list}, or nil. List entries of jobs
-- that left the line (cancelled, perhaps back in the zset since) are dropped here, each
-- once.
local function head_of(lane)
  local line, back = line_key(lane), back_key(lane)
  local first = redis.call('LINDEX', line, 0)
  while first and (redis.call('HGET', STATE, first) ~= 'pending'
                   or redis.call('ZSCORE', back, first)) do
    redis.call('LPOP', line)
    first = redis.call('LINDEX', line, 0)
  end
  local returned = redis.call('ZRANGE', back, 0, 0, 'WITHSCORES')
  if first then
    local seq = seq_of(first)
    if not returned[1] or seq < tonumber(returned[2]) then return {first, seq, true} end
  end
  if returned[1] then return {returned[1], tonumber(returned[2]), false} end
  return nil
end

-- The head leaves its line, claimed.
local function take_head(lane, head)
  if head[3] then redis.call('LPOP', line_key(lane))
  else redis.call('ZREM', back_key(lane), head[1]) end
end

-- What a worker can still give (scheduling.Capacity), from msgpack [free, labels];
-- nil ('') takes anything.
local function capacity_of(packed)
  if packed == nil or packed == '' then return nil end
  local data = cmsgpack.unpack(packed)
  local labels = {}
  for _, label in ipairs(data[2]) do labels[label] = true end
  return {free = data[1], labels = labels}
end

-- A lane's shape: {needs = {name = amount}, labels = {...}} (SHAPES, written at submit).
local function shape_of(lane)
  local packed = redis.call('HGET', SHAPES, lane)
  if not packed then return {needs = {cpus = 1}, labels = {}} end
  local data = cmsgpack.unpack(packed)
  return {needs = data[1], labels = data[2]}
end

-- Capacity.fits: every label the worker's, every need within what is free.
local function fits(capacity, shape)
  if capacity == nil then return true end
  for _, label in ipairs(shape.labels) do
    if not capacity.labels[label] then return false end
  end
  for name, amount in pairs(shape.needs) do
    if amount > (capacity.free[name] or 0) then return false end
  end
  return true
end

-- Capacity.minus, in place.
local function take(capacity, shape)
  if capacity == nil then return end
  for name, amount in pairs(shape.needs) do
    capacity.free[name] = (capacity.free[name] or 0) - amount
  end
end

-- Of the lanes (highest priority first), the one whose head goes next: the smallest
-- rank among the heads that fit, in the highest priority that has one. A lane found
-- empty leaves LANES; a head that does not fit is out for this claim (what is free
-- only shrinks, and every job of a lane takes the same).
local function next_lane(lanes, capacity)
  local best = nil
  for _, lane in ipairs(lanes) do
    if best and lane.score > best.score then break end
    if not lane.out and not lane.head then
      lane.head = head_of(lane.name)
      if not lane.head then
        redis.call('ZREM', LANES, lane.name)
        lane.out = true
      end
    end
    if not lane.out then
      lane.shape = lane.shape or shape_of(lane.name)
      if not fits(capacity, lane.shape) then
        lane.out = true
      elseif not best or lane.head[2] < best.head[2] then
        best = lane
      end
    end
  end
  return best
end

-- Lease up to n pending jobs to worker, by the rules of scheduling.py: highest priority
-- first, then rank; with a capacity, only jobs that fit what the ones before left free.
-- Costs a read per lane and one per job handed out, whatever else is pending.
-- A queue an older shoal made keeps its pending jobs in one list, 'pending': they join
-- lane p0 at their seq, once (the list goes). One EXISTS per claim otherwise.
local LEGACY_PENDING = PREFIX .. 'pending'
local function adopt_legacy_pending()
  if redis.call('EXISTS', LEGACY_PENDING) == 0 then return end
  for _, id in ipairs(redis.call('LRANGE', LEGACY_PENDING, 0, -1)) do
    if redis.call('HGET', STATE, id) == 'pending' then
      redis.call('ZADD', back_key('p0'), seq_of(id), id)
      redis.call('ZADD', LANES, lane_score('p0'), 'p0')
    end
  end
  redis.call('DEL', LEGACY_PENDING)
end

local function claim(worker, n, lease_ms, capacity)
  adopt_legacy_pending()
  local leases, lanes = {}, {}
  local listed = redis.call('ZRANGE', LANES, 0, -1, 'WITHSCORES')
  for i = 1, #listed, 2 do
    lanes[#lanes + 1] = {name = listed[i], score = tonumber(listed[i + 1])}
  end
  local deadline = nil
  while #leases < n do
    local lane = next_lane(lanes, capacity)
    if not lane then break end
    local id = lane.head[1]
    take_head(lane.name, lane.head)
    lane.head = nil
    if redis.call('HGET', STATE, id) == 'pending' then  -- always, unless a bug left it
      take(capacity, lane.shape)
      deadline = deadline or (now_ms() + lease_ms)
      local attempt = attempt_of(id)
      local token = attempt .. '.' .. redis.call('INCR', SEQ)
      move(id, 'pending', 'running')
      redis.call('HSET', TOKEN, id, token)
      redis.call('HSET', OWNER, id, worker)
      redis.call('ZADD', RUNNING, deadline, id)
      leases[#leases + 1] = {id, attempt, token, redis.call('HGET', SPEC, id),
                             redis.call('HGET', PAYLOAD, id), seq_of(id)}
    end
  end
  -- Jobs left pending: wake the next claimer (it may fit them); else no token is due.
  local left = (tonumber(redis.call('HGET', COUNTS, 'pending')) or 0) > 0
  if left then wake(1) else redis.call('DEL', WAKE) end
  return leases, left
end

-- The reply of a claim: {config stamp, leases, 1 if jobs stay pending}.
local function claim_reply(leases, left)
  return {#leases > 0 and config_stamp() or false, leases, left and 1 or 0}
end

-- -- dependencies: DEPS edges, UNMET counts -------------------------------------------

-- The jobs that named `id` in their `after` (ids hold no NUL byte).
local function dependants_of(id)
  local edges = redis.call('ZRANGEBYLEX', DEPS, '[' .. id .. '\0', '(' .. id .. '\1')
  local skip = #id + 2
  for i, edge in ipairs(edges) do edges[i] = string.sub(edge, skip) end
  return edges
end

-- The ids of a list, each once, in order.
local function unique(ids)
  local seen, found = {}, {}
  for _, id in ipairs(ids) do
    if not seen[id] then
      seen[id] = true
      found[#found + 1] = id
    end
  end
  return found
end

-- A job's `after`, each id once (from its spec).
local function deps_of(id)
  local spec = redis.call('HGET', SPEC, id)
  return unique(spec and cjson.decode(spec).after or {})
end

local function name_of(id)
  local spec = redis.call('HGET', SPEC, id)
  return spec and cjson.decode(spec).name or ''
end

-- A job ends without running because `dep` ended in `state` (failed or cancelled); its
-- record names the dependency and records.py says why (scheduling.dependency_reason).
local function end_by_dependency(id, from, dep, dep_name, state)
  redis.call('HDEL', UNMET, id)
  set_final(id, from, state, cjson.encode({job_id = id, state = state, attempt = 0,
                                           dep = dep, dep_name = dep_name}))
end

-- `id` failed or was cancelled: its waiting dependants end the same way, and theirs in
-- turn (iteratively: a chain may be long). Touches only the edges out of ended jobs.
local function end_dependants(id, state)
  local stack = {id}
  while #stack > 0 do
    local dep = table.remove(stack)
    local dep_name = nil
    for _, dependant in ipairs(dependants_of(dep)) do
      if redis.call('HGET', STATE, dependant) == 'waiting' then
        dep_name = dep_name or name_of(dep)
        end_by_dependency(dependant, 'waiting', dep, dep_name, state)
        stack[#stack + 1] = dependant
      end
    end
  end
end

-- `id` is done: each waiting dependant has one dependency fewer to wait for; those with
-- none left become pending at their seq. Returns how many did.
local function release_dependants(id)
  local released = 0
  for _, dependant in ipairs(dependants_of(id)) do
    if redis.call('HGET', STATE, dependant) == 'waiting'
        and redis.call('HINCRBY', UNMET, dependant, -1) <= 0 then
      redis.call('HDEL', UNMET, dependant)
      move(dependant, 'waiting', 'pending')
      line_up(dependant, rank_of(dependant))
      released = released + 1
    end
  end
  return released
end

-- scheduling.first_state: 'pending', 'waiting' and how many are not done, or the state
-- and id of a dependency that failed or was cancelled. An unknown id counts as not done
-- (a job of the same submission that a later batch brings).
local function standing(deps)
  local unmet = 0
  for _, dep in ipairs(deps) do
    local state = redis.call('HGET', STATE, dep)
    if state == 'failed' or state == 'cancelled' then return state, dep end
    if state ~= 'done' then unmet = unmet + 1 end
  end
  if unmet > 0 then return 'waiting', unmet end
  return 'pending', 0
end

-- A job (new: `from` nil, or retried from a final state) goes where its dependencies
-- say: pending at `rank`, waiting, or ended at once with the dependants waiting for it.
-- Returns the state it is in.
local function place(id, from, rank, deps)
  local state, detail = standing(deps)
  if state == 'pending' then
    move(id, from, 'pending')
    line_up(id, rank)
  elseif state == 'waiting' then
    move(id, from, 'waiting')
    redis.call('HSET', UNMET, id, detail)
    -- its rank waits with it: a job a retry put first stays first
    if rank ~= seq_of(id) then redis.call('HSET', RANK, id, rank)
    else redis.call('HDEL', RANK, id) end
  else
    end_by_dependency(id, from, detail, name_of(detail), state)
    end_dependants(id, state)
  end
  return state
end

-- -- a worker's heartbeat: its beat, and the reaps ----------------------------------------

-- A beat (beat.lua), its arguments from ARGV[first]: worker, info, host, lease_ms, then
-- per lease (id, token, progress report or '', log tail so far or ''): kept only under a
-- current lease. EXTRA is the worker's control list. Returns {indexes of lost leases
-- (0-based), commands}.
local function beat(first)
  local worker, now = ARGV[first], now_ms()
  redis.call('HSET', WORKERS, worker, ARGV[first + 1])
  redis.call('HSET', HOSTS, worker, ARGV[first + 2])
  redis.call('ZADD', SEEN, now, worker)
  local deadline = now + tonumber(ARGV[first + 3])
  local lost = {}
  for i = first + 4, #ARGV, 4 do
    local id = ARGV[i]
    if current(id, ARGV[i + 1]) then
      redis.call('ZADD', RUNNING, 'XX', deadline, id)
      if ARGV[i + 2] ~= '' then redis.call('HSET', PROGRESS, id, ARGV[i + 2]) end
      if ARGV[i + 3] ~= '' then redis.call('HSET', TAILS, id, ARGV[i + 3]) end
    else
      lost[#lost + 1] = (i - first - 4) / 4
    end
  end
  local commands = redis.call('LRANGE', EXTRA, 0, -1)
  if #commands > 0 then redis.call('DEL', EXTRA) end
  return {lost, commands}
end

-- A reap (reap.lua): takes back every lease whose deadline passed (pending with attempt
-- + 1 at its rank, or failed at the cap, ending the jobs waiting for it), logs each in
-- the reaped stream, and returns the reaps of the last keep_ms (`most` at most).
local function reap(keep_ms, most, default_max_attempts)
  local now = now_ms()
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
    if attempt >= (tonumber(spec.max_attempts) or default_max_attempts) then
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
  return redis.call('XRANGE', REAPED, oldest, '+', 'COUNT', most)
end
