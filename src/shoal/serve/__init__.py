"""The coordinator (`shoal serve`): a local queue served to clients over ZeroMQ.

`coordinator.py` runs the socket and the reply cache, `service.py` holds the table
of requests, `parking.py` parked claims and result watchers, `locate.py` finds a live
coordinator or starts one. The transport it speaks is `net/`.
"""
