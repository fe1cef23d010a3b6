"""`dir://PATH` (or a plain PATH): a queue in a folder, shared over NFS, sshfs or a local disk.

layout.py names the paths, queue.py is the state machine (`FolderQueue`), registry.py
the workers and their heartbeats, groupcommit.py makes results durable in batches.
"""

from .layout import HIDDEN
from .queue import FolderQueue

__all__ = ["HIDDEN", "FolderQueue"]
