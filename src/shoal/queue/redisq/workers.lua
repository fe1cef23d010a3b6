-- Returns {server time in ms, HGETALL workers, ZRANGE seen WITHSCORES}.
return {now_ms(), redis.call('HGETALL', WORKERS),
        redis.call('ZRANGE', SEEN, 0, -1, 'WITHSCORES')}
