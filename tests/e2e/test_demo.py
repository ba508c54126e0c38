"""``make run`` as a new user meets it: the commands it prints do what the comments above say.

The demo (policy_extproc/demo.py) runs as a subprocess on free ports (POLICY_EXTPROC_DEMO_*),
writing into tmp_path. Once it prints "Ctrl-C stops", the text above that line is pasted as a
shell would run it, in order: a small translator turns each printed ``curl`` (the flags the text
uses: -s -i -N -o -w -H -d), the ``for ... do ...; done; echo`` loop and each
``policy-extproc`` line into urllib and subprocess calls, so no curl binary is needed. ``ID``
is the approval_id the previous output showed, as a user would copy it. A flag or shell form
the translator does not know fails the test: teach it rather than skip the command.

The last tests stop the demo as a user does, with Ctrl-C (SIGINT to the demo) and by closing
the terminal (SIGHUP to its process group), and check that nothing it started lives on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from policy_extproc.demo import ENV_PREFIX, Ports, curls
from tests.envoy_harness import DEFAULT_CONFIG, REPO_ROOT, EnvoyPorts, free_port, render_config

pytestmark = pytest.mark.e2e

READY = "Ctrl-C stops"
APPROVAL_ID = re.compile(r'"approval_id":\s*"([^"]+)"')


# -- the demo process --------------------------------------------------------------------------


@dataclass
class Demo:
    """The running ``python -m policy_extproc.demo`` and what it printed."""

    proc: subprocess.Popen[bytes]
    ports: Ports
    run_dir: Path
    stdout: Path
    stderr: Path
    text: str = ""  # stdout up to the READY line: what the user pastes from

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")


def _free_ports() -> Ports:
    names = [f.name for f in dataclasses.fields(Ports)]
    taken: set[int] = set()
    while len(taken) < len(names):
        taken.add(free_port())
    return Ports(**dict(zip(names, taken, strict=True)))


def _clean_env() -> dict[str, str]:
    # A developer's POLICY_EXTPROC_* (an admin address, a token, Redis) would change what the
    # demo and the pasted commands do; the user of this test is a new one.
    return {k: v for k, v in os.environ.items() if not k.startswith("POLICY_EXTPROC_")}


def _as_from_a_terminal() -> None:
    """The stop signals at their defaults, as `make run` typed in a terminal has them: the demo
    keeps a signal it inherits as ignored (nohup, a script's background job), and a test run
    started so (``nohup make test &``) would otherwise find it deaf to SIGINT and SIGHUP."""
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def _start_demo(ports: Ports, run_dir: Path) -> Demo:
    env = _clean_env()
    env[f"{ENV_PREFIX}RUN_DIR"] = str(run_dir)
    for f in dataclasses.fields(ports):
        env[f"{ENV_PREFIX}{f.name.upper()}_PORT"] = str(getattr(ports, f.name))
    stdout, stderr = run_dir / "demo.stdout", run_dir / "demo.stderr"
    run_dir.mkdir(parents=True, exist_ok=True)
    with stdout.open("wb") as out, stderr.open("wb") as err:
        # Files, not pipes: the sidecar logs every request, and a full pipe would block it.
        # Its own session, so the teardown can reach every process it started (killpg).
        proc = subprocess.Popen(
            [sys.executable, "-m", "policy_extproc.demo"],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            env=env,
            start_new_session=True,
            preexec_fn=_as_from_a_terminal,
        )
    demo = Demo(proc, ports, run_dir, stdout, stderr)
    deadline = time.monotonic() + 60
    while READY not in (text := stdout.read_text(errors="replace")):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(demo)
            pytest.fail(f"the demo did not print {READY!r}:\n{demo.output()}")
        time.sleep(0.05)
    demo.text = text.split(READY)[0]
    return demo


def _stop(demo: Demo) -> None:
    """Ctrl-C, then whatever is left of the session, by its process group."""
    if demo.proc.poll() is None:
        demo.proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            demo.proc.wait(timeout=40)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(demo.proc.pid, signal.SIGKILL)
    demo.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    running = _start_demo(_free_ports(), tmp_path_factory.mktemp("demo") / "run")
    try:
        yield running
    finally:
        _stop(running)


# -- the translator: pasted text to calls ------------------------------------------------------


@dataclass
class Fetched:
    """One HTTP exchange of a translated curl."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)


@dataclass
class Step:
    """One pasted command: the comment above it, the line (ID filled in), what it printed."""

    comment: str
    line: str
    output: str = ""
    returncode: int = 0
    fetched: list[Fetched] = field(default_factory=list)

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.line)

    def json(self) -> Any:
        return json.loads(self.output)


def _curl(args: list[str]) -> tuple[str, Fetched]:
    """curl ARGS with urllib: what curl would print, and the exchange."""
    include, discard, write_out = False, False, ""
    headers: dict[str, str] = {}
    data: bytes | None = None
    url = ""
    rest = iter(args)
    for arg in rest:
        if arg == "-H":
            name, _, value = next(rest).partition(":")
            headers[name.strip()] = value.strip()
        elif arg == "-d":
            data = next(rest).encode()
        elif arg == "-o":
            target = next(rest)
            assert target == "/dev/null", f"curl -o {target}: the translator only knows /dev/null"
            discard = True
        elif arg == "-w":
            write_out = next(rest)
        elif re.fullmatch(r"-[siN]+", arg):
            include = include or "i" in arg  # -s: no progress meter; -N: no buffering
        else:
            assert not arg.startswith("-"), f"curl {arg}: unknown to the translator"
            assert not url, f"curl with two URLs: {args}"
            url = arg if "://" in arg else f"http://{arg}"
    if data is not None and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/x-www-form-urlencoded"  # curl -d's default
    request = urllib.request.Request(
        url, data=data, headers=headers, method="POST" if data is not None else "GET"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            fetched = Fetched(resp.status, resp.reason, resp.getheaders(), resp.read())
    except urllib.error.HTTPError as exc:  # 4xx and 5xx: curl prints them like any other
        with exc:
            fetched = Fetched(exc.code, exc.reason, list(exc.headers.items()), exc.read())
    printed = ""
    if include:
        lines = [f"HTTP/1.1 {fetched.status} {fetched.reason}"]
        lines += [f"{k}: {v}" for k, v in fetched.headers]
        printed = "\r\n".join(lines) + "\r\n\r\n"
    if not discard:
        printed += fetched.body.decode()
    if write_out:
        written = write_out.replace("%{http_code}", str(fetched.status))
        assert "%{" not in written, f"curl -w {write_out!r}: a variable unknown to the translator"
        printed += written
    return printed, fetched


def _admin_cli(argv: list[str]) -> tuple[str, int]:
    """A pasted policy-extproc line, run as the shell would: stdout then stderr, exit code."""
    done = subprocess.run(
        argv, capture_output=True, text=True, env=_clean_env(), timeout=60, check=False
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout + done.stderr, done.returncode


def run(step: Step) -> Step:
    """Run one step's line (a curl, a loop of one, a policy-extproc line); fill in its output."""
    if step.line.startswith("for "):  # for VAR in WORDS; do CURL; done[; echo]
        loop = re.fullmatch(r"for \w+ in ([\w ]+); do (curl [^;]+); done(; echo)?", step.line)
        assert loop, f"a shell form the translator does not know: {step.line}"
        body = shlex.split(loop.group(2))
        assert "$" not in loop.group(2), f"the loop body uses a variable: {step.line}"
        outputs = [_curl(body[1:]) for _ in loop.group(1).split()]
        step.output = "".join(out for out, _ in outputs) + ("\n" if loop.group(3) else "")
        step.fetched = [f for _, f in outputs]
    elif step.line.startswith("curl "):
        step.output, fetched = _curl(step.argv[1:])
        step.fetched = [fetched]
    elif step.argv[0].endswith("/policy-extproc"):
        step.output, step.returncode = _admin_cli(step.argv)
    else:
        pytest.fail(f"a command the translator does not know: {step.line}")
    return step


def paste(text: str) -> list[Step]:
    """Every command of the printed text, run in order, the way a user pastes it."""
    steps: list[Step] = []
    comment, in_comment, approval_id = "", False, ""
    for line in re.sub(r"\\\n", " ", text).splitlines():  # backslash-newline: one line
        line = line.strip()
        if not line:  # a blank line ends a section: what follows is under no comment
            comment, in_comment = "", False
            continue
        if line.startswith("#"):
            # A comment may run over lines; its first line names what follows.
            comment = comment if in_comment else line
            in_comment = True
            continue
        in_comment = False
        if not line.startswith(("curl ", "for ")):
            # Prose may end with a command to try ("verify it with: .../policy-extproc ...").
            found = re.search(r"(\S+/policy-extproc .+)$", line)
            if found is None:
                continue
            line = found.group(1)
        if re.search(r"\bID\b", line):
            assert approval_id, f"{line}: no approval_id printed before it"
            line = re.sub(r"\bID\b", approval_id, line)
        step = run(Step(comment, line))
        steps.append(step)
        if found_id := APPROVAL_ID.search(step.output):
            approval_id = found_id.group(1)
    return steps


# -- the tests ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def steps(demo: Demo) -> list[Step]:
    """The whole printed text pasted once, in order (throttle and escalate depend on it)."""
    return paste(demo.text)


def under(steps: list[Step], comment_start: str) -> list[Step]:
    """The steps below the comment that starts with comment_start."""
    found = [s for s in steps if s.comment.startswith(comment_start)]
    assert found, f"no command under a comment {comment_start!r}"
    return found


def test_default_ports_are_make_runs() -> None:
    # make run's Envoy config stays envoy/envoy.yaml, the template with the default ports; the
    # demo's own rendering (for moved ports) must agree with the harness's.
    assert Ports().envoy_config() == DEFAULT_CONFIG.read_text()
    moved = _free_ports()
    harness_ports = EnvoyPorts(
        extproc=moved.extproc,
        openai=moved.openai,
        azure=moved.azure,
        anthropic=moved.anthropic,
        listen=moved.listen,
        admin=moved.admin,
    )
    assert moved.envoy_config() == render_config(harness_ports)
    text = curls(Ports(), Path("run/audit.jsonl"))
    assert "localhost:10000/" in text
    assert "--admin" not in text  # the CLI's default, 127.0.0.1:50052, is the demo's
    with pytest.raises(SystemExit, match="POLICY_EXTPROC_DEMO_LISTEN_PORT"):
        Ports.from_env({"POLICY_EXTPROC_DEMO_LISTEN_PORT": "70000"})


def test_text_names_the_moved_ports(demo: Demo) -> None:
    assert f"localhost:{demo.ports.listen}/" in demo.text
    assert "localhost:10000" not in demo.text
    assert f"--admin 127.0.0.1:{demo.ports.admin_api}" in demo.text
    assert str(demo.run_dir / "audit.jsonl") in demo.text


def test_allow(steps: list[Step]) -> None:
    (step,) = under(steps, "# allow")
    assert step.fetched[0].status == 200
    assert step.fetched[0].header("x-mock-provider") == "openai"
    assert step.json()["choices"][0]["message"]["content"] == "echo: Hello there"
    # "add -i to see the x-policy-decision header"
    shown = run(Step(step.comment, step.line.replace("curl -s ", "curl -si ", 1)))
    head = shown.output.partition("\r\n\r\n")[0].lower().splitlines()
    assert "x-policy-decision: allow" in head


def test_block_model_by_team(steps: list[Step]) -> None:
    (step,) = under(steps, "# block (model access by team)")
    assert step.fetched[0].status == 403
    body = step.json()
    assert (body["error"]["code"], body["policy"], body["rule"]) == (
        "blocked",
        "acme_support_team",
        "models",
    )
    assert "gpt-4o" in body["error"]["message"]


def test_block_credential(steps: list[Step]) -> None:
    (step,) = under(steps, "# block (content)")
    assert step.fetched[0].status == 403
    body = step.json()
    assert (body["error"]["code"], body["rule"]) == ("blocked", "secrets")


def test_block_model_spelling(steps: list[Step]) -> None:
    (step,) = under(steps, "# block (model spelling)")
    assert step.fetched[0].status == 403
    body = step.json()
    assert (body["error"]["code"], body["rule"]) == ("blocked", "no-reasoning-models")
    assert "'o1-preview' is denied" in body["reason"]


def test_refused_without_an_organisation(steps: list[Step]) -> None:
    (step,) = under(steps, "# refused (identity)")
    assert step.fetched[0].status == 400
    assert step.json()["error"]["code"] == "missing_identity"


def test_redact(steps: list[Step]) -> None:
    (step,) = under(steps, "# modify (redact)")
    head, _, body = step.output.partition("\r\n\r\n")  # -i: the headers are printed
    assert head.startswith("HTTP/1.1 200")
    assert "x-policy-decision: modify" in head.lower().splitlines()
    echoed = json.loads(body)["choices"][0]["message"]["content"]
    assert "[REDACTED:codenames]" in echoed
    assert "[EMAIL]" in echoed
    assert "project-aurora" not in echoed
    assert "bob@example.org" not in echoed


def test_throttle(steps: list[Step]) -> None:
    (step,) = under(steps, "# throttle")
    assert step.output.split() == ["200", "200", "200", "429"]
    assert step.output.endswith("\n")  # the loop's echo
    assert step.fetched[-1].header("retry-after")


def test_escalate_approve_resend_once(steps: list[Step]) -> None:
    (asked,) = under(steps, "# escalate")
    assert asked.fetched[0].status == 403
    refused = asked.json()
    assert (refused["error"]["code"], refused["decision"]) == ("approval_required", "escalate")
    approval_id = refused["approval_id"]

    listed, approved = under(steps, "# ... an approver approves it")
    assert listed.returncode == 0, listed.output
    row = next(line.split() for line in listed.output.splitlines() if approval_id in line)
    assert row[:4] == [approval_id, "acme", "alice", "pending"]
    assert approved.argv[3] == approval_id
    assert approved.returncode == 0, approved.output
    assert approved.output.startswith(f"{approval_id}: approved by ")

    (resent,) = under(steps, "# ... and the same user resends")
    assert "x-approval-id: " + approval_id in resent.argv
    assert resent.fetched[0].status == 200, resent.output
    assert resent.json()["choices"][0]["message"]["content"] == "echo: Plan the launch"
    # "it passes, once": the same paste again is refused.
    again = run(Step(resent.comment, resent.line))
    assert again.fetched[0].status == 403
    assert again.json()["error"]["code"] == "approval_invalid"


def test_anthropic_stream(steps: list[Step]) -> None:
    (step,) = under(steps, "# Anthropic format, streamed")
    assert step.fetched[0].status == 200
    assert (step.fetched[0].header("content-type") or "").startswith("text/event-stream")
    events = []
    for block in step.output.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    names = [name for name, _ in events]
    assert names[0] == "message_start"
    assert names[-1] == "message_stop"
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == "echo: Hi"


def test_printed_admin_and_audit_commands(demo: Demo, steps: list[Step]) -> None:
    (verify,) = [s for s in steps if s.argv[1:3] == ["audit", "verify"]]
    assert verify.returncode == 0, verify.output
    assert "chain intact" in verify.output
    # Printed first, so pasted before any request; again now that the requests are in it.
    again = run(Step(verify.comment, verify.line))
    assert again.returncode == 0, again.output
    counted = re.search(r"ok, (\d+) records, chain intact", again.output)
    assert counted, again.output
    assert int(counted.group(1)) > 0
    (policies,) = [s for s in steps if s.argv[1:3] == ["policies", "list"]]
    assert policies.returncode == 0, policies.output
    names = {line.split()[0] for line in policies.output.splitlines()[1:] if line.strip()}
    assert {"acme_baseline", "acme_ml_team", "acme_support_team"} <= names


def _descendants(pid: int) -> dict[int, str]:
    """Every live process below pid: {pid: command line} (Linux /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child in [c for c, p in parents.items() if p == parent]:
            found[child] = _cmdline(child)
            frontier.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _children(demo: Demo) -> dict[int, str]:
    """The processes the demo started, checked to be the five it should have."""
    if not Path("/proc/self/stat").exists():
        return {}  # no /proc: the ports alone tell
    children = _descendants(demo.proc.pid)
    commands = " | ".join(children.values())
    assert commands.count(" mock-provider ") == 3, commands
    assert commands.count(" serve ") == 1, commands
    assert commands.count("/envoy ") == 1, commands
    return children


def _assert_all_stopped(demo: Demo, children: dict[int, str]) -> None:
    left = {pid: cmd for pid, cmd in children.items() if _alive(pid)}
    assert not left, f"still running after the demo stopped: {left}"
    busy = [port for port in dataclasses.astuple(demo.ports) if not _port_free(port)]
    assert not busy, f"ports still bound after the demo stopped: {busy}"


def test_closed_terminal_stops_every_child(tmp_path: Path) -> None:
    # A closed terminal sends SIGHUP to the whole foreground group; Envoy ignores SIGHUP, so
    # only the demo stopping it keeps it from holding the ports for the next `make run`.
    own = _start_demo(_free_ports(), tmp_path / "run")
    try:
        children = _children(own)
        os.killpg(own.proc.pid, signal.SIGHUP)
        own.proc.wait(timeout=60)
        _assert_all_stopped(own, children)
    finally:
        _stop(own)


def test_ctrl_c_stops_every_child(demo: Demo) -> None:
    # Last in the file on purpose: it ends the module's demo.
    children = _children(demo)
    demo.proc.send_signal(signal.SIGINT)
    assert demo.proc.wait(timeout=60) == 0, demo.output()
    _assert_all_stopped(demo, children)
