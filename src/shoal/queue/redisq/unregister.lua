-- EXTRA: the worker's control list. ARGV: worker.
redis.call('HDEL', WORKERS, ARGV[1])
redis.call('HDEL', HOSTS, ARGV[1])
redis.call('ZREM', SEEN, ARGV[1])
redis.call('DEL', EXTRA)
return 1
