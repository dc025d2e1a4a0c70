"""One factory for every Redis deployment Triage runs on: a URL in, an asyncio client out.

- ``redis://`` / ``rediss://`` (TLS) / ``unix://``: one server, through a blocking pool.
- ``redis+sentinel://[user:pass@]h1:26379,h2:26379/<service>[/<db>]`` (``rediss+sentinel://`` for TLS
  to the master): the master Sentinel names, re-resolved on reconnect, so a failover moves us.
- ``redis+cluster://[user:pass@]h1:6379,h2:6379`` (``rediss+cluster://``): Redis Cluster from a seed
  list. Every key one script touches shares the tenant's hash tag (see ``redis_keys``), so each
  EVALSHA goes to one slot's master.

Everything above the factory talks to the returned object through the commands the three client
classes share (EVALSHA via ``register_script``, single-key commands, non-transactional pipelines).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


@dataclass
class RedisTarget:
    kind: str  # "single" | "sentinel" | "cluster"
    url: str
    hosts: list[tuple[str, int]] = field(default_factory=list)
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    options: dict[str, str] = field(default_factory=dict)


def _hosts(netloc: str, default_port: int) -> list[tuple[str, int]]:
    out = []
    for part in netloc.split(","):
        part = part.strip()
        if not part:
            continue
        if part.startswith("["):  # [ipv6]:port
            host, _, port = part[1:].partition("]")
            port = port.lstrip(":")
        else:
            host, _, port = part.rpartition(":") if ":" in part else (part, "", "")
        out.append((host, int(port) if port else default_port))
    if not out:
        raise ValueError("no host in Redis URL")
    return out


def parse_redis_url(url: str) -> RedisTarget:
    """Classify a Redis URL; raises ValueError naming what is wrong."""
    if not url:
        raise ValueError("empty Redis URL")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("redis", "rediss", "unix"):
        return RedisTarget(kind="single", url=url, ssl=scheme == "rediss")
    if scheme not in SENTINEL_SCHEMES + CLUSTER_SCHEMES:
        raise ValueError(
            f"unsupported Redis URL scheme {scheme!r}: use redis://, rediss://, unix://, "
            "redis+sentinel://h1:26379,h2:26379/<service> or redis+cluster://h1:6379,h2:6379"
        )
    # urlsplit chokes on comma-separated ports, so peel userinfo off by hand.
    rest = url.split("://", 1)[1]
    netloc, _, path_q = rest.partition("/")
    path, _, query = path_q.partition("?")
    if "?" in netloc:
        netloc, _, query = netloc.partition("?")
    username = password = None
    if "@" in netloc:
        cred, netloc = netloc.rsplit("@", 1)
        user, sep, pw = cred.partition(":")
        username, password = (unquote(user) or None), (unquote(pw) if sep else None)
    opts = {k: v[-1] for k, v in parse_qs(query).items()}
    ssl = scheme.startswith("rediss")
    if scheme in SENTINEL_SCHEMES:
        parts = [p for p in path.split("/") if p]
        if not parts:
            raise ValueError("redis+sentinel:// URL needs the service (master) name: .../<service>[/<db>]")
        return RedisTarget(kind="sentinel", url=url, hosts=_hosts(netloc, 26379), service=unquote(parts[0]),
                           db=int(parts[1]) if len(parts) > 1 else 0, username=username, password=password,
                           ssl=ssl, options=opts)
    if path.strip("/") not in ("", "0"):
        raise ValueError("Redis Cluster has only database 0")
    return RedisTarget(kind="cluster", url=url, hosts=_hosts(netloc, 6379), username=username,
                       password=password, ssl=ssl, options=opts)


def sentinel_url(sentinels: list[str], service: str, *, db: int = 0, tls: bool = False) -> str:
    """A redis+sentinel:// URL from a config list of ``host:port`` sentinels."""
    return f"{'rediss' if tls else 'redis'}+sentinel://{','.join(sentinels)}/{service}/{db}"


def cluster_url(nodes: list[str], *, tls: bool = False) -> str:
    return f"{'rediss' if tls else 'redis'}+cluster://{','.join(nodes)}"


def make_client(url: str, *, connect_timeout_s: float = 1.0, socket_timeout_s: float | None = None,
                max_connections: int = 512, pool_wait_s: float = 2.0, retries: int = 0,
                health_check_interval_s: float = 0) -> Any:
    """An asyncio client for ``url``: ``Redis``, ``Redis`` bound to a Sentinel master, or ``RedisCluster``.

    ``retries``: how often a command that hit a connection error (a pooled connection gone stale
    after a Redis restart, say) is resent on a fresh connection; only for connection errors, so a
    timeout is never stretched. For Cluster a few redirect/topology retries stay on regardless:
    after a failover the first call to a moved slot must follow MOVED to the promoted replica.
    ``health_check_interval_s``: idle connections are PINGed before reuse after this long (0: never).
    """
    from redis.asyncio import BlockingConnectionPool, Redis  # noqa: PLC0415 - keep import light
    from redis.asyncio.retry import Retry  # noqa: PLC0415
    from redis.backoff import ExponentialBackoff  # noqa: PLC0415
    from redis.exceptions import ConnectionError as RedisConnectionError  # noqa: PLC0415

    t = parse_redis_url(url)
    retry = Retry(ExponentialBackoff(cap=0.05, base=0.005), retries, supported_errors=(RedisConnectionError,))
    if t.kind == "single":
        pool = BlockingConnectionPool.from_url(
            url, socket_timeout=socket_timeout_s, socket_connect_timeout=connect_timeout_s,
            max_connections=max_connections, timeout=pool_wait_s, retry=retry,
            health_check_interval=health_check_interval_s,
        )
        return Redis(connection_pool=pool)
    auth: dict[str, Any] = {"username": t.username, "password": t.password}
    if t.kind == "sentinel":
        from redis.asyncio.sentinel import Sentinel  # noqa: PLC0415

        conn = {**auth, "socket_timeout": socket_timeout_s, "socket_connect_timeout": connect_timeout_s,
                "retry": retry, "db": t.db, "health_check_interval": health_check_interval_s}
        if t.ssl:
            conn["ssl"] = True
        sentinel_auth = {"password": t.options["sentinel_password"]} if "sentinel_password" in t.options else {}
        s = Sentinel(t.hosts, sentinel_kwargs={"socket_connect_timeout": connect_timeout_s,
                                               "socket_timeout": max(connect_timeout_s, 1.0), **sentinel_auth},
                     **conn)
        return s.master_for(t.service, redis_class=Redis, max_connections=max_connections)
    from redis.asyncio.cluster import ClusterNode, RedisCluster  # noqa: PLC0415

    return RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in t.hosts], **auth, ssl=t.ssl,
        socket_timeout=socket_timeout_s, socket_connect_timeout=connect_timeout_s,
        max_connections=max_connections, retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), max(retries, 3)),
        require_full_coverage=False,  # one dead master must not stop the tenants on the others
    )


def is_cluster(client: Any) -> bool:
    return type(client).__name__ == "RedisCluster"


async def close_client(client: Any) -> None:
    await client.aclose()
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        await pool.disconnect()
