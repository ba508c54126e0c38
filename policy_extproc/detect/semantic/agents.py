"""The prompt-injection signals of tool abuse by agents (family ``tool_abuse``), as (weight,
expression) pairs: destructive commands, secrets and history sent out, actions taken without
asking. Weak cues ("quietly", "without asking") count only next to another one (signals.py)."""

from __future__ import annotations

TOOL_ABUSE: tuple[tuple[float, str], ...] = (
    (
        0.85,
        r"(\brm\s+-rf\b|\bdrop\s+table\b|/etc/(passwd|shadow)|\.ssh/"
        r"(id_|authorized_keys)|authorized_keys|169\.254\.169\.254|"
        r"\bcurl\b[^|\n]{0,80}\|\s*(ba)?sh\b|os\.system\(|shutdown\s+-h|"
        r"push\s+--force|\bmkfs\b)",
    ),
    (
        0.4,
        r"\b(without (asking|confirmation|confirming|telling)|no "
        r"confirmation|do not mention|don't mention|quietly|silently|"
        r"secretly|hide that)\b",
    ),
    (
        0.55,
        r"\b(send|forward|post|upload|email|exfiltrate|share|transfer|"
        r"paste|print)\w*\b[^.\n]{0,50}\b(conversation|history|inbox|"
        r"(customer )?records|api keys?|passwords?|environment variables|"
        r"credentials|secrets|schedule|id_rsa|tokens)\b",
    ),
    (
        0.45,
        r"\b(to|at) (my|this|our|an external) (server|address|account|"
        r"endpoint|webhook)|@[a-z0-9-]+\.(example|com|net|org|io)\b",
    ),
    (
        0.3,
        r"\b(call|invoke|use|run|execute|trigger)\s+(the\s+)?[a-z_]+\s*"
        r"(tool|api|function|interpreter)\b",
    ),
    (
        0.6,
        r"\b(create_admin|delete_all|delete_repository|grant write access "
        r"to everyone|transfer \d+ (dollars|euros))",
    ),
    (
        0.5,
        r"\b(delete|erase|wipe|remove|destroy)\b[^.\n]{0,15}\b(every|all( of)?( the)?|each)\b"
        r"[^.\n]{0,20}\b(documents?|files?|e-?mails?|messages|records|repos|repositories|"
        r"backups|accounts|users|contacts)\b",
    ),
)
