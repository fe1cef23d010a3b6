"""The Redis backend: `RedisQueue` and the Lua scripts it runs (one per state change)."""

from .queue import RedisQueue

__all__ = ["RedisQueue"]
