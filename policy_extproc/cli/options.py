"""Option types of the commands: sizes, durations, listen addresses, TLS files, --policies."""

from __future__ import annotations

from collections.abc import Callable

import click

policies_option = click.option(
    "--policies",
    "policies",
    required=True,
    multiple=True,
    type=click.Path(exists=True),
    help="Policy file or directory (repeatable).",
)
"""``--policies`` as the offline commands (``eval``, ``test``) take it."""


def tls_options(f: Callable[..., None]) -> Callable[..., None]:
    """--tls-* for the ext_proc/ext_authz listener, --admin-tls-* for the admin API."""
    pem = click.Path(exists=True, dir_okay=False)
    for prefix, what in (
        ("admin-tls", "the admin API"),
        ("tls", "the ext_proc/ext_authz listener"),
    ):
        f = click.option(
            f"--{prefix}-client-ca",
            default=None,
            type=pem,
            help=f"PEM CA whose client certificates {what} accepts (mTLS; needs the cert).",
        )(f)
        f = click.option(
            f"--{prefix}-key", default=None, type=pem, help=f"PEM private key of {what}."
        )(f)
        f = click.option(
            f"--{prefix}-cert",
            default=None,
            type=pem,
            help=f"PEM certificate chain of {what}: TLS on (re-read when the file changes).",
        )(f)
    return f


def listen_options(f: Callable[..., None]) -> Callable[..., None]:
    """``serve --policies``, ``--listen``, ``--transport`` (policy_extproc/listeners.py) and
    ``--event-loop`` (policy_extproc/eventloop.py)."""
    f = click.option(
        "--transport",
        default="grpc",
        show_default=True,
        type=click.Choice(["grpc", "h2"]),
        help="What serves --listen: grpc (grpc.aio), or h2, the sidecar's own lean HTTP/2 "
        "transport (h2c, or TLS with ALPN h2): the same services, reflection included, for "
        "less CPU per request.",
    )(f)
    f = click.option(
        "--event-loop",
        default="auto",
        show_default=True,
        type=click.Choice(["auto", "asyncio", "uvloop"]),
        help="The event loop: auto is uvloop's under --transport h2 (less CPU per request), "
        "asyncio's own under grpc.",
    )(f)
    f = click.option("--listen", default="127.0.0.1:50051", show_default=True)(f)
    return click.option(
        "--policies",
        required=True,
        multiple=True,
        type=click.Path(exists=True),
        help="Policy file or directory (repeatable; env: comma-free single path).",
    )(f)


_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def parse_size(value: str | None) -> int | None:
    if not value:
        return None
    text = value.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = (text[:-1], text[-1]) if text[-1:] in _SIZE_UNITS else (text, "")
    if not number.isdigit() or int(number) * _SIZE_UNITS[unit] < 4096:
        raise click.BadParameter(f"{value!r}: a size of at least 4096 bytes, such as 100M")
    return int(number) * _SIZE_UNITS[unit]


def parse_seconds(value: str | None, flag: str) -> float | None:
    if not value:
        return None
    from ..policy.fields import FieldError, duration

    try:
        return duration(value)
    except FieldError as exc:
        raise click.BadParameter(str(exc), param_hint=flag) from None


def parse_listen_address(value: str | None) -> str | None:
    if value and value.lower() in ("off", "none"):
        return None
    if value:
        from ..metrics import parse_listen

        try:
            parse_listen(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from exc
    return value or None
