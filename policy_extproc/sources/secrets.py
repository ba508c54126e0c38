"""What compiling a policy set needs from outside the policies, read where it lives.

``read_secrets`` is called by the edges that compile (``files``, ``store``, the CLI; the worker
processes get the parent's) and hands a ``model.Secrets`` to ``Snapshot``: the pseudonym key of
``pii`` rules with ``style: hash``, from the file ``POLICY_EXTPROC_PII_HASH_KEY_FILE`` names (a
Kubernetes secret volume) or else ``POLICY_EXTPROC_PII_HASH_KEY``; the current year (the
latest a birth date may lie in); and the semantic guards' models (``sources.models.SHIPPED``,
read when a compile first needs them). Read when a set compiles, never per request: a changed
key takes effect with the next reload, and the store reloads when the year turns
(``PolicyStore.changed``).
"""

from __future__ import annotations

import os
from datetime import date

from ..policy.model import Secrets
from ..policy.privacy import KEY_ENV, KEY_FILE_ENV
from .models import SHIPPED


def read_secrets() -> Secrets:
    """The secrets as they are now, this year's; an unreadable key file raises ``OSError``."""
    path = os.environ.get(KEY_FILE_ENV)
    if path:
        with open(path, "rb") as f:
            key = f.read().strip() or None
    else:
        value = os.environ.get(KEY_ENV)
        key = value.encode() if value else None
    return Secrets(pii_hash_key=key, year=this_year(), models=SHIPPED)


def this_year() -> int:
    """The year it is, on the local calendar."""
    return date.today().year
