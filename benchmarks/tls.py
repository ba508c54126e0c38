"""What TLS and mTLS cost on the sidecar's listener: one ext_authz Check, plaintext, TLS, mTLS.

One in-process sidecar per mode (certificates made here, tests/tls_certs.py). Two figures per
mode: a Check on a channel that is already open (what Envoy does: one HTTP/2 connection carries
every stream), and a Check on a new channel (the handshake included, what a reconnect costs).
Modes are measured in interleaved rounds; each figure is the median over rounds of the round's
median, with the spread of the round medians (min-max).

Run by hand: ``.venv/bin/python benchmarks/tls.py [--rounds 5 --calls 300]``. Prints figures;
never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from envoy.service.auth.v3 import external_auth_pb2_grpc as authg

from policy_extproc.tls import TlsFiles, channel_credentials
from tests.integration.helpers import chat_body, running_sidecar
from tests.integration.test_extauthz_grpc import POLICIES, check_request
from tests.tls_certs import CertificateAuthority

MODES = ("plaintext", "tls", "mtls")


def _channel(port: int, mode: str, certs: Path) -> grpc.aio.Channel:
    target = f"127.0.0.1:{port}"
    if mode == "plaintext":
        return grpc.aio.insecure_channel(target)
    client = certs / "client"
    creds = channel_credentials(
        str(certs / "server" / "ca.crt"),
        str(client / "tls.crt") if mode == "mtls" else None,
        str(client / "tls.key") if mode == "mtls" else None,
    )
    return grpc.aio.secure_channel(target, creds)


async def _timed(stub: authg.AuthorizationStub, request: object) -> float:
    start = time.perf_counter()
    await stub.Check(request)
    return time.perf_counter() - start


async def main(rounds: int, calls: int, new_channels: int) -> None:
    request = check_request(chat_body("hello there"))
    with tempfile.TemporaryDirectory() as tmp:
        certs = Path(tmp)
        ca = CertificateAuthority()
        server = ca.issue(certs / "server", "policy-extproc")
        ca.issue(certs / "client", "envoy", client=True)
        files = {
            "plaintext": None,
            "tls": TlsFiles(str(server / "tls.crt"), str(server / "tls.key")),
            "mtls": TlsFiles(
                str(server / "tls.crt"), str(server / "tls.key"), str(server / "ca.crt")
            ),
        }
        open_ms: dict[str, list[float]] = {m: [] for m in MODES}
        new_ms: dict[str, list[float]] = {m: [] for m in MODES}
        async with AsyncExitStack() as stack:
            ports = {}
            for mode in MODES:
                running = await stack.enter_async_context(
                    running_sidecar(certs / mode, POLICIES, tls=files[mode], admin_listen=None)
                )
                ports[mode] = running.sidecar.port
            for _ in range(rounds):
                for mode in MODES:
                    async with _channel(ports[mode], mode, certs) as channel:
                        stub = authg.AuthorizationStub(channel)
                        await stub.Check(request)  # connect and warm up
                        times = [await _timed(stub, request) for _ in range(calls)]
                    open_ms[mode].append(statistics.median(times) * 1e3)
                    fresh = []
                    for _ in range(new_channels):
                        async with _channel(ports[mode], mode, certs) as channel:
                            fresh.append(await _timed(authg.AuthorizationStub(channel), request))
                    new_ms[mode].append(statistics.median(fresh) * 1e3)
    print(f"ext_authz Check, {rounds} interleaved rounds of {calls} calls (open channel) and")
    print(f"{new_channels} calls on new channels; median of round medians, min-max of rounds")
    print(f"{'mode':<10} {'open channel ms':>22} {'new channel ms':>22}")
    for mode in MODES:
        o, n = open_ms[mode], new_ms[mode]
        print(
            f"{mode:<10} {statistics.median(o):>8.3f} ({min(o):.3f}-{max(o):.3f})"
            f"   {statistics.median(n):>8.3f} ({min(n):.3f}-{max(n):.3f})"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--new-channels", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.calls, args.new_channels))
