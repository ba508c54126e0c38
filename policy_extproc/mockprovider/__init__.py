"""A fake OpenAI- and Anthropic-compatible LLM provider for demos and tests (standard library only).

Answers every API call with the last user message echoed back (``echo: <text>``) in the real
response shape of the API, with ``usage`` (about 4 characters per token, at least 1), streams
Server-Sent Events when the body asks for ``"stream": true``, and fails on demand: the request
header ``x-mock-status: 503``, a random fraction of requests (``fail_rate``), or at run time
through ``POST /mock/control``. ``GET /mock/stats`` tells a test what the provider received.

    _http.py    HTTP/1.1 framing (keep-alive, Content-Length and chunked bodies)
    apis.py     response shapes per API, pure functions of the request body
    routes.py   which handler answers a path, and each provider's error body
    server.py   MockProvider (in a loop or a thread), serve(), run() and the CLI main()
"""

from policy_extproc.mockprovider.apis import estimate_tokens
from policy_extproc.mockprovider.routes import APIS, error_body
from policy_extproc.mockprovider.server import MockProvider, main, parse_listen, run, serve

__all__ = [
    "APIS",
    "MockProvider",
    "error_body",
    "estimate_tokens",
    "main",
    "parse_listen",
    "run",
    "serve",
]
