"""Where a queue lives in Redis: every key under one hash tag, `shoal:{NAME}:...`.

One tag means one Cluster slot per queue, so each Lua script may touch all of a
queue's keys at once, while different queues spread over the Cluster's nodes.
"""

from __future__ import annotations

#: the keys every script gets, in the order prelude.lua unpacks them
SHARED = ("spec", "payload", "state", "attempt", "wake", "running", "token",
          "owner", "result", "failed", "counts", "finals", "reaped", "workers", "seen", "hosts",
          "seq", "logs", "tails", "progress", "config", "numbers", "numbered",
          "lanes", "shapes", "lane", "rank", "deps", "unmet")


class QueueKeys:
    """The key names of one queue; `shared` is what every script is given as KEYS."""

    def __init__(self, name: str) -> None:
        """`name` as redis_link.parse_url checked it (no braces: the tag stays whole)."""
        self.name = name
        self.prefix = f"shoal:{{{name}}}:"
        self.shared = [self.prefix + part for part in SHARED]
        for part in SHARED:
            setattr(self, part, self.prefix + part)

    def control(self, worker: str) -> str:
        """The list of control commands waiting for `worker`."""
        return f"{self.prefix}control:{worker}"

    def blob(self, digest: str) -> str:
        """A function blob, stored once under its sha256."""
        return f"{self.prefix}blob:{digest}"

    # A lane's `line:LANE` list and `back:LANE` zset (prelude.lua) are named by the
    # scripts themselves, from this prefix: same tag, same slot.
