"""The network queue: a coordinator (`shoal serve`) and its clients over ZeroMQ."""
