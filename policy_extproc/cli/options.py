"""Option types of the commands: sizes, durations, listen addresses, TLS files, --policies."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

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
    """``serve --policies``, ``--listen``, ``--transport`` (policy_extproc/listeners.py) with
    its ``--h2-*`` limits, and ``--event-loop`` (policy_extproc/eventloop.py)."""
    f = h2_limit_options(f)
    f = click.option(
        "--transport",
        default="h2",
        show_default=True,
        type=click.Choice(["grpc", "h2"]),
        help="What serves --listen: h2, the sidecar's own lean HTTP/2 transport (h2c, or TLS "
        "with ALPN h2), or grpc (grpc.aio): the same services, reflection included; h2 costs "
        "about half the CPU per request.",
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


# --h2-* flag -> (Limits field, type, help); the defaults are Limits' own.
_H2_LIMITS: dict[str, tuple[str, Any, str]] = {
    "max-concurrent-streams": (
        "max_concurrent_streams",
        click.IntRange(1, 2**31 - 1),
        "SETTINGS_MAX_CONCURRENT_STREAMS: a stream past it is refused (REFUSED_STREAM). Envoy "
        "queues streams past it instead of opening a connection: keep it above the ext_proc "
        "cluster's circuit breaker max_requests.",
    ),
    "max-header-list-size": (
        "max_header_list_size",
        click.IntRange(4096, 2**24 - 1),
        "SETTINGS_MAX_HEADER_LIST_SIZE, bytes: a header block past it is GOAWAY.",
    ),
    "flood-window": (
        "window_s",
        click.FloatRange(0.001, 3600.0),
        "Seconds --h2-max-early-resets and --h2-max-control-frames count within.",
    ),
    "max-early-resets": (
        "max_early_resets",
        click.IntRange(1),
        "Streams a peer resets before their handler ran, or opens past the concurrent limit, "
        "per --h2-flood-window; past it GOAWAY ENHANCE_YOUR_CALM (rapid reset).",
    ),
    "max-control-frames": (
        "max_control_frames",
        click.IntRange(1),
        "PING, SETTINGS, WINDOW_UPDATE, PRIORITY, unknown and empty frames per "
        "--h2-flood-window (those answering our DATA free); past it GOAWAY ENHANCE_YOUR_CALM.",
    ),
    "handshake-timeout": (
        "handshake_timeout_s",
        click.FloatRange(0.001, 3600.0),
        "Seconds a connection has to send the HTTP/2 preface and SETTINGS.",
    ),
    "idle-timeout": (
        "idle_timeout_s",
        click.FloatRange(0.0, 86400.0),
        "Seconds without a stream after which a connection is sent GOAWAY NO_ERROR and closed "
        "(0: never; Envoy keeps its connections to the sidecar open).",
    ),
}


def h2_limit_options(f: Callable[..., None]) -> Callable[..., None]:
    """``serve --h2-*``, the lean transport's abuse limits, handed to the command as one
    ``h2_limits`` (policy_extproc/transport/limits.py)."""
    from ..transport.limits import Limits

    defaults = Limits()

    @functools.wraps(f)
    def command(**kwargs: Any) -> None:
        values = {field: kwargs.pop(f"h2_{flag.replace('-', '_')}") for flag, (field, _, _) in
                  _H2_LIMITS.items()}  # fmt: skip
        try:
            limits = Limits(**values)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        f(h2_limits=limits, **kwargs)

    for flag, (field, kind, text) in reversed(_H2_LIMITS.items()):
        default = getattr(defaults, field)
        command = click.option(
            f"--h2-{flag}", default=default, show_default=True, type=kind, help=f"h2: {text}"
        )(command)
    return command


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
