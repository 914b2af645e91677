"""Throwaway Redis servers for tests: this package's, and a layer user's.

    with RedisServer() as server:          # started on free loopback ports
        layer = RedisPubSubChannelLayer.from_url(server.url)
        ...
        server.restart()                   # an outage; same port, same URL

`RedisServer` runs a private ``redis-server`` (optionally with a password,
and a TLS port whose certificate a throwaway CA signed) in the shape of
`channels_core.testing.ThrowawayServer`; `redis_servers` starts any number
of them and stops them all when its block ends. `SentinelSetup` is a
master, a replica and three Sentinels (``redis+sentinel://`` URL) that fail
over in about a second. `ClusterSetup` is a Redis Cluster of three masters
and three replicas (``redis+cluster://`` URL); ``python -m
channels_layer_redis.testing cluster`` runs one until Ctrl-C. Needs the
``redis-server`` program (``redis-cli`` for the cluster, ``openssl`` for
TLS); without it they raise `ToolMissing`.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import ClassVar

import redis

from channels_core.testing import ThrowawayServer, ToolMissing, free_port, require_tool

__all__ = [
    "ClusterSetup",
    "RedisServer",
    "SentinelSetup",
    "ToolMissing",
    "free_port",
    "make_certificates",
    "reachable",
    "redis_servers",
    "require_tool",
    "tls_arguments",
]

_INSTALL_HINT = "apt-get install redis-server"


def reachable(url: str) -> bool:
    """Whether a Redis server answers PING at `url`."""
    # RESP2: redis-py 8 would say HELLO 3 first, which a server may refuse.
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1, protocol=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


class RedisServer(ThrowawayServer):
    """A ``redis-server`` process on a loopback port (and a unix socket) that we own.

    Its files go to `directory` (a temporary directory of its own if None,
    removed at the end).
    """

    def __init__(
        self,
        directory: Path | None = None,
        password: str | None = None,
        tls: bool = False,
        *,
        port: int | None = None,
        arguments: Sequence[str] = (),
    ) -> None:
        super().__init__(port)
        #: More ``redis-server`` arguments (``--replicaof host port``, ...).
        self.arguments = list(arguments)
        self._binary = require_tool("redis-server", _INSTALL_HINT)
        self._own_directory = directory is None
        self._directory = (
            Path(tempfile.mkdtemp(prefix="redis-server-")) if directory is None else directory
        )
        self.unix_socket = self._directory / "redis.sock"
        self.password = password
        self.tls_port = free_port() if tls else None
        self.ca_file = self._directory / "ca.crt"
        if tls:
            make_certificates(self._directory)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = "" if self.password is None else f":{self.password}@"
        return f"redis://{auth}{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        """The server's process id (to freeze it with SIGSTOP)."""
        assert self._process is not None
        return self._process.pid

    @property
    def running(self) -> bool:
        """Whether the server process is up (started and not stopped or killed)."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self._process is not None:
            return
        self._process = subprocess.Popen(  # noqa: S603 - our own binary and arguments
            [
                self._binary,
                "--port", str(self.port),
                "--bind", self.host,
                "--unixsocket", str(self.unix_socket),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self._directory),
                *(["--requirepass", self.password] if self.password else []),
                *self._tls_arguments(),
                *self.arguments,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not reachable(self.url):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def _tls_arguments(self) -> list[str]:
        if self.tls_port is None:
            return []
        return tls_arguments(self._directory, self.tls_port)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait(timeout=10)

    def cleanup(self) -> None:
        if self._own_directory:
            shutil.rmtree(self._directory, ignore_errors=True)


def tls_arguments(directory: Path, tls_port: int) -> list[str]:
    """``redis-server`` arguments for TLS on `tls_port` (`make_certificates` in `directory`)."""
    return [
        "--tls-port", str(tls_port),
        "--tls-cert-file", str(directory / "server.crt"),
        "--tls-key-file", str(directory / "server.key"),
        "--tls-ca-cert-file", str(directory / "ca.crt"),
        "--tls-auth-clients", "no",
    ]  # fmt: skip


def make_certificates(directory: Path) -> None:
    """A throwaway CA (ca.crt) and a server certificate for 127.0.0.1 signed by it."""
    openssl = require_tool("openssl", "apt-get install openssl")

    def run(*arguments: str) -> None:
        subprocess.run(  # noqa: S603 - openssl from PATH, our own arguments
            [openssl, *arguments], cwd=directory, check=True, capture_output=True
        )

    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    )
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "1", "-extfile", "san.cnf", "-out", "server.crt")  # fmt: skip


@contextmanager
def redis_servers(
    make_directory: Callable[[], Path | None] = lambda: None,
) -> Iterator[Callable[..., RedisServer]]:
    """A ``start(password=None, tls=False)`` function; every server it started stops at exit."""
    with ExitStack() as servers:

        def start(password: str | None = None, tls: bool = False) -> RedisServer:
            return servers.enter_context(RedisServer(make_directory(), password, tls))

        yield start


class SentinelSetup(ThrowawayServer):
    """A master, a replica and three Sentinels watching them as `service`, all on loopback.

    Failover is quick (down after 1 s, failover timeout 3 s). The master
    and the Sentinels may have passwords (`password`: the master's,
    `sentinel_password`: the Sentinels'). `port` is the first Sentinel's.
    It starts in well under a second: a master syncs a replica at once
    (not 5 s later, waiting for more), and the Sentinels' timers run quick
    until they know each other and the replica, then as in production.
    """

    QUORUM = 2
    #: Sentinel timers (``SENTINEL DEBUG``, Redis 7+) while the setup starts:
    #: a Sentinel greets the others through the master every 2 s and asks a
    #: server's INFO every 10 s, so meeting takes seconds at the defaults.
    STARTING_TIMERS: ClassVar[dict[str, str]] = {"PUBLISH-PERIOD": "100", "INFO-PERIOD": "100"}

    def __init__(
        self,
        service: str = "channels",
        *,
        password: str | None = None,
        sentinel_password: str | None = None,
        tls: bool = False,
    ) -> None:
        self._directory = Path(tempfile.mkdtemp(prefix="redis-sentinel-"))
        self.service = service
        self.password = password
        self.sentinel_password = sentinel_password
        #: With `tls`, every process also takes TLS on a port of its own (the
        #: URL's), certified by one throwaway CA, `ca_file`; Sentinels reach
        #: the servers, and the replica its master, over TLS.
        self.tls = tls
        self.ca_file = self._directory / "ca.crt"
        if tls:
            make_certificates(self._directory)
        self.sentinel_ports = [free_port() for _ in range(3)]
        self._tls_ports = {port: free_port() for port in self.sentinel_ports}
        master = RedisServer(self._directory / "master", password)
        self._tls_ports[master.port] = free_port()
        # Either server is the master after a failover: neither waits to sync a replica.
        at_once = ["--repl-diskless-sync-delay", "0"]
        master.arguments = [*self._tls_arguments(master.port), *at_once]
        auth = ["--masterauth", password] if password else []
        replica = RedisServer(self._directory / "replica", password)
        self._tls_ports[replica.port] = free_port()
        replica.arguments = [
            *self._tls_arguments(replica.port), *at_once,
            "--replicaof", master.host, str(self._announced(master.port)), *auth,
        ]  # fmt: skip
        self.servers = [master, replica]
        super().__init__(self.sentinel_ports[0])
        self._binary = require_tool("redis-server", _INSTALL_HINT)
        self._sentinels: list[subprocess.Popen[bytes]] = []

    def _announced(self, port: int) -> int:
        """The port others reach the process listening on `port` through (TLS's if `tls`)."""
        return self._tls_ports[port] if self.tls else port

    def _tls_arguments(self, port: int) -> list[str]:
        if not self.tls:
            return []
        return [*tls_arguments(self._directory, self._tls_ports[port]), "--tls-replication", "yes"]

    @property
    def url(self) -> str:
        auth = "" if self.password is None else f":{self.password}@"
        hosts = ",".join(f"{self.host}:{self._announced(port)}" for port in self.sentinel_ports)
        query = [f"ssl_ca_certs={self.ca_file}"] if self.tls else []
        if self.sentinel_password is not None:
            query.append(f"sentinel_password={self.sentinel_password}")
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        return f"{scheme}://{auth}{hosts}/{self.service}{'?' if query else ''}{'&'.join(query)}"

    def sentinel(self, index: int = 0) -> redis.Redis:
        """A client of Sentinel `index` (close it after use)."""
        return redis.Redis(
            host=self.host,
            port=self.sentinel_ports[index],
            password=self.sentinel_password,
            socket_timeout=5,
            decode_responses=True,
        )

    def master_address(self) -> tuple[str, int]:
        """The master as the first Sentinel names it."""
        client = self.sentinel()
        try:
            host, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)  # type: ignore[no-untyped-call]
            return str(host), int(port)
        finally:
            client.close()

    def master(self) -> RedisServer:
        """The server the Sentinels name as master now."""
        _, port = self.master_address()
        return next(server for server in self.servers if self._announced(server.port) == port)

    def start(self) -> None:
        if self._sentinels:
            return
        for directory in (self._directory / "master", self._directory / "replica"):
            directory.mkdir(exist_ok=True)
        try:
            for server in self.servers:
                server.start()
            for port in self.sentinel_ports:
                self._sentinels.append(self._start_sentinel(port))
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def _start_sentinel(self, port: int) -> subprocess.Popen[bytes]:
        master = self.servers[0]
        lines = [
            f"port {port}",
            f"bind {self.host}",
            f"dir {self._directory}",
            f"sentinel monitor {self.service} {master.host} "
            f"{self._announced(master.port)} {self.QUORUM}",
            f"sentinel down-after-milliseconds {self.service} 1000",
            f"sentinel failover-timeout {self.service} 3000",
            f"sentinel parallel-syncs {self.service} 1",
        ]
        if self.password:
            lines.append(f"sentinel auth-pass {self.service} {self.password}")
        if self.sentinel_password:
            lines += [
                f"requirepass {self.sentinel_password}",
                f"sentinel sentinel-pass {self.sentinel_password}",
            ]
        tls = self._tls_arguments(port)
        lines += [
            f"{name.removeprefix('--')} {value}"
            for name, value in zip(tls[::2], tls[1::2], strict=True)
        ]
        config = self._directory / f"sentinel-{port}.conf"
        config.write_text("\n".join(lines) + "\n")
        return subprocess.Popen(  # noqa: S603 - our own binary and arguments
            [self._binary, str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _wait_until_ready(self, timeout: float = 30) -> None:
        """Until every Sentinel knows the replica and the two other Sentinels.

        Their timers run at `STARTING_TIMERS` meanwhile, then as before.
        """
        deadline = time.monotonic() + timeout
        clients = [self.sentinel(index) for index in range(len(self.sentinel_ports))]
        try:
            for client in clients:
                self._until(deadline, partial(self._answers, client))
            timers = [self._quicken(client) for client in clients]
            for client in clients:
                self._until(deadline, partial(self._ready, client))
            for client, before in zip(clients, timers, strict=True):
                if before:
                    client.execute_command("SENTINEL", "DEBUG", *before)  # type: ignore[no-untyped-call]
        finally:
            for client in clients:
                client.close()

    def _until(self, deadline: float, condition: Callable[[], bool]) -> None:
        """Poll `condition` until it holds; `RuntimeError` at `deadline` or if a Sentinel exits."""
        while not condition():
            if time.monotonic() > deadline or any(
                process.poll() is not None for process in self._sentinels
            ):
                raise RuntimeError("the Sentinel setup did not become ready")
            time.sleep(0.02)

    @staticmethod
    def _answers(client: redis.Redis) -> bool:
        """Whether the Sentinel behind `client` answers PING (it started)."""
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    def _quicken(self, client: redis.Redis) -> list[str]:
        """Set `STARTING_TIMERS`; the arguments that set them back ([] before Redis 7)."""
        try:
            timers = client.execute_command("SENTINEL", "DEBUG")  # type: ignore[no-untyped-call]
        except redis.ResponseError:
            return []  # no SENTINEL DEBUG: the default timers, a slower start
        if isinstance(timers, list):
            timers = dict(zip(timers[::2], timers[1::2], strict=True))
        quick = [word for item in self.STARTING_TIMERS.items() for word in item]
        client.execute_command("SENTINEL", "DEBUG", *quick)  # type: ignore[no-untyped-call]
        return [word for name in self.STARTING_TIMERS for word in (name, str(timers[name]))]

    def _ready(self, client: redis.Redis) -> bool:
        try:
            replicas = client.execute_command("SENTINEL", "REPLICAS", self.service)  # type: ignore[no-untyped-call]
            others = client.execute_command("SENTINEL", "SENTINELS", self.service)  # type: ignore[no-untyped-call]
        except redis.RedisError:
            return False
        in_sync = [r for r in replicas if "s_down" not in str(r.get("flags", ""))]
        linked = all(r.get("master-link-status") == "ok" for r in in_sync)
        return bool(in_sync) and linked and len(others) == len(self.sentinel_ports) - 1

    def failover(self, timeout: float = 30) -> tuple[str, int]:
        """``SENTINEL FAILOVER`` once the replica has every write (a planned failover);
        return the new master's address once the Sentinels name it."""
        before = self.master_address()
        self.wait_until_replicated(timeout)
        client = self.sentinel()
        try:
            client.execute_command("SENTINEL", "FAILOVER", self.service)  # type: ignore[no-untyped-call]
        finally:
            client.close()
        return self.wait_for_new_master(before, timeout)

    def wait_until_replicated(self, timeout: float = 30) -> None:
        """Until the replica has applied every write the master has made so far.

        Replication is asynchronous, and Sentinel promotes a replica without
        waiting for it: a replica whose link has just come up may not have
        a write of a moment ago yet (seen: offset 0 against the master's
        16,414), and promoted then it would lose it.
        """
        master = self.master()
        replica = next(server for server in self.servers if server is not master)
        clients = [
            redis.Redis(
                host=server.host, port=server.port, password=self.password, socket_timeout=5
            )
            for server in (master, replica)
        ]
        try:
            wanted = clients[0].info("replication")["master_repl_offset"]

            def caught_up() -> bool:
                state = clients[1].info("replication")
                return bool(
                    state.get("master_link_status") == "up"
                    and state.get("slave_repl_offset", -1) >= wanted
                )

            self._until(time.monotonic() + timeout, caught_up)
        finally:
            for client in clients:
                client.close()

    def wait_for_new_master(self, before: tuple[str, int], timeout: float = 30) -> tuple[str, int]:
        """The master's address once it is no longer `before`."""
        deadline = time.monotonic() + timeout
        while (address := self.master_address()) == before:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no failover away from {before} within {timeout:g} s")
            time.sleep(0.05)
        return address

    def stop(self) -> None:
        sentinels, self._sentinels = self._sentinels, []
        for process in sentinels:
            process.kill()
        for process in sentinels:
            process.wait(timeout=10)
        for server in self.servers:
            server.stop()

    def cleanup(self) -> None:
        for server in self.servers:
            server.cleanup()
        shutil.rmtree(self._directory, ignore_errors=True)


class ClusterSetup(ThrowawayServer):
    """A Redis Cluster on loopback: `masters` masters, each with `replicas_per_master` replicas.

    Every node is a `RedisServer` with ``--cluster-enabled yes`` in a
    temporary directory of its own; ``redis-cli --cluster create`` spreads
    the 16,384 slots over the masters. A node is declared failed after
    `node_timeout_ms` (low, so that a replica takes over in a second or
    two), and a replica may always take over, however stale. `port` is the
    first node's; the URL names every master.
    """

    def __init__(
        self,
        masters: int = 3,
        replicas_per_master: int = 1,
        *,
        password: str | None = None,
        node_timeout_ms: int = 1000,
        tls: bool = False,
    ) -> None:
        self._directory = Path(tempfile.mkdtemp(prefix="redis-cluster-"))
        self.password = password
        #: With `tls`, every node also takes TLS on a port of its own (the
        #: URL's, ``rediss+cluster://``), certified by one throwaway CA,
        #: `ca_file`; the cluster bus and replication use TLS too.
        self.tls = tls
        self.ca_file = self._directory / "ca.crt"
        if tls:
            make_certificates(self._directory)
        #: Each node's TLS port, by its port.
        self.tls_ports: dict[int, int] = {}
        self.masters = masters
        self.replicas_per_master = replicas_per_master
        auth = ["--masterauth", password] if password else []
        self.servers = []
        #: Each node's cluster bus port, by its port.
        self.bus_ports: dict[int, int] = {}
        for index in range(masters * (1 + replicas_per_master)):
            bus_port = free_port()
            arguments = [
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                # The bus port is the node's port + 10,000 by default, past
                # 65,535 for a high free port: a free port of its own instead.
                "--cluster-port", str(bus_port),
                "--cluster-node-timeout", str(node_timeout_ms),
                "--cluster-replica-validity-factor", "0",
                # Any node is a master after a failover: none waits to sync a replica.
                "--repl-diskless-sync-delay", "0",
                *auth,
            ]  # fmt: skip
            server = RedisServer(self._directory / f"node-{index}", password, arguments=arguments)
            if tls:
                self.tls_ports[server.port] = free_port()
                server.arguments += [
                    *tls_arguments(self._directory, self.tls_ports[server.port]),
                    "--tls-cluster", "yes",
                    "--tls-replication", "yes",
                ]  # fmt: skip
            self.servers.append(server)
            self.bus_ports[server.port] = bus_port
        super().__init__(self.servers[0].port)
        self._cli = require_tool("redis-cli", _INSTALL_HINT)
        self._started = False

    @property
    def url(self) -> str:
        """``redis+cluster://`` naming every master as started (any one is enough to connect).

        ``rediss+cluster://`` with `tls`, the TLS ports and ``ssl_ca_certs``.
        """
        auth = "" if self.password is None else f":{self.password}@"
        masters = self.servers[: self.masters]
        if not self.tls:
            hosts = ",".join(f"{server.host}:{server.port}" for server in masters)
            return f"redis+cluster://{auth}{hosts}"
        hosts = ",".join(f"{server.host}:{self.tls_ports[server.port]}" for server in masters)
        return f"rediss+cluster://{auth}{hosts}?ssl_ca_certs={self.ca_file}"

    def client(self, server: RedisServer) -> redis.Redis:
        """A plain client of one node (close it after use)."""
        return redis.Redis(
            host=server.host,
            port=server.port,
            password=self.password,
            socket_timeout=5,
            decode_responses=True,
        )

    def server_at(self, port: int) -> RedisServer:
        """The node listening on `port`."""
        return next(server for server in self.servers if server.port == port)

    def shards(self) -> dict[int, list[tuple[int, int]]]:
        """Each running master's port -> the slot ranges it owns, as a live node sees them."""
        server = next(server for server in self.servers if server.running)
        client = self.client(server)
        try:
            slots = client.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
        finally:
            client.close()
        owners: dict[int, list[tuple[int, int]]] = {}
        for start, end, master, *_ in slots:
            owners.setdefault(int(master[1]), []).append((int(start), int(end)))
        return owners

    def master_of(self, slot: int) -> RedisServer:
        """The node owning `slot` now."""
        for port, ranges in self.shards().items():
            if any(start <= slot <= end for start, end in ranges):
                return self.server_at(port)
        raise LookupError(f"no node owns slot {slot}")

    def replica_of(self, master: RedisServer) -> RedisServer:
        """A replica of `master`, as `master` lists it."""
        client = self.client(master)
        try:
            info = client.info("replication")
        finally:
            client.close()
        return self.server_at(int(info["slave0"]["port"]))

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        try:
            for index, server in enumerate(self.servers):
                (self._directory / f"node-{index}").mkdir(exist_ok=True)
                server.start()
            if self.masters >= 3:
                self._create()
            else:
                self._assemble()
            self.wait_until_ok()
        except BaseException:
            self.stop()
            raise

    def _create(self) -> None:
        """``redis-cli --cluster create``: slots spread evenly, replicas on other masters."""
        auth = ["-a", self.password, "--no-auth-warning"] if self.password else []
        subprocess.run(  # noqa: S603 - our own redis-cli and arguments
            [
                self._cli, *auth, "--cluster", "create",
                *(f"{server.host}:{server.port}" for server in self.servers),
                "--cluster-replicas", str(self.replicas_per_master),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip

    def _assemble(self) -> None:
        """What ``--cluster create`` does, for the 1 or 2 masters it refuses.

        Each master takes an even share of the slots, the nodes meet, and
        the replicas follow their masters.
        """
        clients = [self.client(server) for server in self.servers]
        try:
            share = 16384 // self.masters
            for index, client in enumerate(clients[: self.masters]):
                last = 16383 if index == self.masters - 1 else (index + 1) * share - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", index * share, last)  # type: ignore[no-untyped-call]
                client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", index + 1)  # type: ignore[no-untyped-call]
            for server in self.servers[1:]:
                clients[0].execute_command(  # type: ignore[no-untyped-call]
                    "CLUSTER", "MEET", server.host, server.port, self.bus_ports[server.port]
                )
            ids = [client.execute_command("CLUSTER", "MYID") for client in clients]  # type: ignore[no-untyped-call]
            deadline = time.monotonic() + 30
            for index, client in enumerate(clients[self.masters :]):
                master = ids[index % self.masters]
                while True:  # until the replica has heard of its master through the bus
                    try:
                        client.execute_command("CLUSTER", "REPLICATE", master)  # type: ignore[no-untyped-call]
                        break
                    except redis.ResponseError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)
        finally:
            for client in clients:
                client.close()

    def wait_until_ok(self, timeout: float = 30) -> None:
        """Until every running node reports ``cluster_state:ok`` and every slot has a master.

        Also waits for each running replica's link to its master.
        """
        deadline = time.monotonic() + timeout
        while not self._ok():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Redis Cluster did not settle within {timeout:g} s")
            time.sleep(0.05)

    def _ok(self) -> bool:
        try:
            for server in self.servers:
                if not server.running:
                    continue
                client = self.client(server)
                try:
                    if client.cluster("info")["cluster_state"] != "ok":
                        return False
                    info = client.info("replication")
                    if info["role"] == "slave" and info["master_link_status"] != "up":
                        return False
                finally:
                    client.close()
            covered = sum(end - start + 1 for r in self.shards().values() for start, end in r)
        except redis.RedisError:
            return False
        return covered == 16384

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        self._started = False

    def cleanup(self) -> None:
        for server in self.servers:
            server.cleanup()
        shutil.rmtree(self._directory, ignore_errors=True)


def _main(argv: Sequence[str]) -> int:
    """``python -m channels_layer_redis.testing cluster``: a throwaway cluster until Ctrl-C."""
    if list(argv) != ["cluster"]:
        print("usage: python -m channels_layer_redis.testing cluster")
        return 2
    with ClusterSetup() as cluster:
        print(cluster.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
