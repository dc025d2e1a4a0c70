"""Shared fixtures: a private real redis-server per session, flushed per test.

The machine may run its own Redis on 127.0.0.1:6379; we never touch it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from accounting.redis_server import EmbeddedRedis  # noqa: E402

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    srv = EmbeddedRedis(tmp_path_factory.mktemp("redis"), persist=True)
    srv.start()
    assert srv.port != 6379
    yield srv
    srv.stop()


@pytest.fixture()
def redis_url(redis_server: EmbeddedRedis) -> str:
    r = redis.Redis.from_url(redis_server.url)
    r.flushall()
    r.close()
    return redis_server.url


@pytest.fixture()
def shared_data() -> Path:
    if not DATA_DIR.is_dir():
        pytest.skip(f"public training data not found at {DATA_DIR}")
    return DATA_DIR


@pytest.fixture(scope="session")
def redis_cluster_server(tmp_path_factory: pytest.TempPathFactory):
    """A real 3-master Redis Cluster (same redis-server binary, --cluster-enabled yes)."""
    from accounting.redis_cluster import EmbeddedCluster

    cl = EmbeddedCluster(tmp_path_factory.mktemp("cluster"), masters=3, persist=False)
    with cl:
        yield cl


@pytest.fixture()
def redis_cluster_url(redis_cluster_server) -> str:
    for n in redis_cluster_server.masters():
        with redis_cluster_server.client(n.port) as c:
            c.flushall()
    return redis_cluster_server.url
