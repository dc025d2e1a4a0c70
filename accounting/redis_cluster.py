"""A private, real Redis Cluster (N masters, optional replicas) for tests and local trials.

The same ``redis-server`` binary as ``EmbeddedRedis``, started with ``--cluster-enabled yes``;
nodes are joined with CLUSTER MEET and given slots with CLUSTER ADDSLOTS (redis-cli is not
needed), replicas attached with CLUSTER REPLICATE. ``url`` is a ``redis+cluster://`` seed list.
"""

from __future__ import annotations

import os
import random
import socket
import time
from pathlib import Path

import redis

from .redis_server import EmbeddedRedis

SLOTS = 16384


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too; both must stay below 65536."""
    for _ in range(200):
        port = random.randint(20000, 55000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for a cluster node")


class EmbeddedCluster:
    def __init__(self, state_dir: str | os.PathLike[str], *, masters: int = 3, replicas: int = 0,
                 node_timeout_ms: int = 1000, persist: bool = True):
        self.state_dir = Path(state_dir).resolve()
        self.n_masters, self.n_replicas = masters, replicas
        self.node_timeout_ms = node_timeout_ms
        self.persist = persist
        self.nodes: list[EmbeddedRedis] = []

    def _node(self, i: int, port: int | None = None) -> EmbeddedRedis:
        d = self.state_dir / f"node{i}"
        return EmbeddedRedis(d, persist=self.persist, port=port or _cluster_port(), extra_args=[
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            # a replica may take over however long it was cut off: tests kill masters on purpose
            "--cluster-replica-validity-factor", "0",
        ])

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)

    def start(self, timeout: float = 30.0) -> "EmbeddedCluster":
        total = self.n_masters * (1 + self.n_replicas)
        try:
            for i in range(total):
                self.nodes.append(self._node(i).start())
        except Exception:
            self.stop()
            raise
        first = self.nodes[0].port
        for n in self.nodes[1:]:
            with self.client(n.port) as c:
                c.execute_command("CLUSTER", "MEET", "127.0.0.1", first)
        per = SLOTS // self.n_masters
        for i, n in enumerate(self.nodes[: self.n_masters]):
            hi = SLOTS if i == self.n_masters - 1 else (i + 1) * per
            with self.client(n.port) as c:
                c.execute_command("CLUSTER", "ADDSLOTS", *range(i * per, hi))
        ids = [self._myid(n.port) for n in self.nodes[: self.n_masters]]
        deadline = time.monotonic() + timeout
        for j, n in enumerate(self.nodes[self.n_masters:]):
            master = ids[j % self.n_masters]
            with self.client(n.port) as c:
                while True:  # the replica must have heard of its master through gossip first
                    try:
                        c.execute_command("CLUSTER", "REPLICATE", master)
                        break
                    except redis.ResponseError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)
        self.wait_ok(timeout)
        return self

    def _myid(self, port: int) -> str:
        with self.client(port) as c:
            v = c.execute_command("CLUSTER", "MYID")
        return v.decode() if isinstance(v, bytes) else v

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node reports cluster_state:ok and agrees every slot is served."""
        deadline = time.monotonic() + timeout
        while True:
            ok = True
            for n in self.alive():
                try:
                    with self.client(n.port) as c:
                        info = c.execute_command("CLUSTER", "INFO")
                        info = info.decode() if isinstance(info, bytes) else info
                        if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
                            ok = False
                        elif self.n_replicas and len(self.masters()) < self.n_masters:
                            ok = False
                except redis.RedisError:
                    ok = False
            if ok:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.1)

    def alive(self) -> list[EmbeddedRedis]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def masters(self) -> list[EmbeddedRedis]:
        out = []
        for n in self.alive():
            try:
                with self.client(n.port) as c:
                    role = c.execute_command("ROLE")[0]
            except redis.RedisError:
                continue
            if (role.decode() if isinstance(role, bytes) else role) == "master":
                out.append(n)
        return out

    def master_for(self, key: str) -> EmbeddedRedis:
        """The live master serving ``key``'s slot."""
        from redis.crc import key_slot  # noqa: PLC0415

        slot = key_slot(key.encode())
        for n in self.masters():
            with self.client(n.port) as c:
                for lo, hi, primary, *_ in c.execute_command("CLUSTER", "SLOTS"):
                    if lo <= slot <= hi and int(primary[1]) == n.port:
                        return n
        raise RuntimeError(f"no master serves slot {slot}")

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()

    def restart(self, node: EmbeddedRedis) -> EmbeddedRedis:
        """Start a killed node again on its port, with its data and cluster config."""
        i = self.nodes.index(node)
        self.nodes[i] = self._node(i, node.port).start()
        return self.nodes[i]

    def __enter__(self) -> "EmbeddedCluster":
        try:
            return self.start()
        except Exception:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
