"""The ``policy-extproc`` command: one module per command group.

- ``root``: the ``main`` group and what every command shares (environment variables, exit codes);
- ``policy_commands``: ``check``, ``eval``, ``schema``, ``test``;
- ``serve_command``: ``serve``, the sidecar;
- ``audit_commands``: ``audit verify``;
- ``tool_commands``: ``dashboard``, ``mock-provider``;
- ``admin.cli``: ``policies`` and ``approvals``, clients of a sidecar's admin API.

``python -m policy_extproc.cli`` and the ``policy-extproc`` console script run ``main``.
"""

from __future__ import annotations

import os

# Before numpy is first imported (the semantic guards import it): one BLAS thread. The guards'
# products are small (72 x 256 by 256 x 126 for a 4 KB prompt's topics); OpenBLAS splits them
# over its threads, which spin while they wait, and on a busy machine that turned a 0.4 ms
# topic pass into 7 ms of CPU at p50 (docs/semantic.md, Cost). Worker processes inherit it;
# an operator's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from ..admin.cli import approvals, policies
from . import audit_commands, policy_commands, serve_command, tool_commands
from .root import ENV, EXIT_NOT_ALLOWED, main

main.add_command(policies)
main.add_command(approvals)

__all__ = ["ENV", "EXIT_NOT_ALLOWED", "audit_commands", "main", "policy_commands",
           "serve_command", "tool_commands"]  # fmt: skip
