-- ARGV: id, spec, payload ('' for none), repeated. Returns the ids that were new.
local new = {}
for i = 1, #ARGV, 3 do
  local id = ARGV[i]
  if redis.call('HSETNX', SPEC, id, ARGV[i + 1]) == 1 then
    if ARGV[i + 2] ~= '' then redis.call('HSET', PAYLOAD, id, ARGV[i + 2]) end
    redis.call('HSET', STATE, id, 'pending')
    redis.call('RPUSH', PENDING, id)
    new[#new + 1] = id
  end
end
if #new > 0 then
  redis.call('HINCRBY', COUNTS, 'pending', #new)
  wake(#new)
end
return new
