"""The pure checks of the request-only rules, for tests of the policy layer.

The server, the admin dry run and ``eval`` all decide through ``enforce.pipeline``; this is
the pure part of it (resolve the rules in force, check the request, decide with no state), for
tests that exercise the policy layer alone.
"""

from __future__ import annotations

from policy_extproc.policy.compiler import Snapshot
from policy_extproc.policy.decision import Decision, RequestContext
from policy_extproc.policy.evaluator import check_request, decide


def evaluate(snapshot: Snapshot, ctx: RequestContext) -> Decision:
    """The decision of the request-only rules for ``ctx`` under ``snapshot``."""
    es = snapshot.resolve(ctx.org, ctx.team, ctx.environment)
    return decide(es, ctx, check_request(es, ctx))
