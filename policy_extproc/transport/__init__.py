"""A lean gRPC transport for the ext_proc hot path: HTTP/2 frames parsed in an asyncio Protocol.

``serve --transport h2`` serves the same servicers as the grpc.aio server through it, with a
fraction of grpcio's per-message cost (benchmarks/e2e.py, config passthrough-h2).
"""

from .call import Call
from .server import H2Server, Route, bidi_stream, server_stream, unary

__all__ = ["Call", "H2Server", "Route", "bidi_stream", "server_stream", "unary"]
