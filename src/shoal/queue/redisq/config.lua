-- ARGV: the shared config's new content. Returns its new stamp.
redis.call('HSET', CONFIG, 'data', ARGV[1])
return tostring(redis.call('HINCRBY', CONFIG, 'stamp', 1))
