-- EXTRA: the worker's control list. ARGV: worker, info, host, lease_ms, then per lease
-- (id, token, progress report or '', log tail so far or ''). Returns {indexes of lost
-- leases (0-based), commands} (prelude.lua's beat).
return beat(1)
