"""The keys compiling a policy set needs, read from where an operator puts them.

``read_secrets`` is called by the edges that compile (``files``, ``store``, the worker
processes, the CLI) and hands a ``model.Secrets`` to ``Snapshot``: the pseudonym key of ``pii``
rules with ``style: hash``, from the file ``POLICY_EXTPROC_PII_HASH_KEY_FILE`` names (a
Kubernetes secret volume) or else ``POLICY_EXTPROC_PII_HASH_KEY``; and the semantic guards'
models (``sources.models.SHIPPED``, read when a compile first needs them). Read when a set
compiles, never per request: a changed key takes effect with the next reload.
"""

from __future__ import annotations

import os

from ..policy.model import Secrets
from ..policy.privacy import KEY_ENV, KEY_FILE_ENV
from .models import SHIPPED


def read_secrets() -> Secrets:
    """The secrets as they are now; an unreadable key file raises ``OSError``."""
    path = os.environ.get(KEY_FILE_ENV)
    if path:
        with open(path, "rb") as f:
            key = f.read().strip() or None
    else:
        value = os.environ.get(KEY_ENV)
        key = value.encode() if value else None
    return Secrets(pii_hash_key=key, models=SHIPPED)
