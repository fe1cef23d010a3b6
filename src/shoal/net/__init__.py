"""The transport between a coordinator (`serve/`) and its clients: ZeroMQ, msgpack,
status files. It imports nothing from `queue/` or `serve/`."""
