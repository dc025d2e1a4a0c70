"""The upstream client both upstream test modules drive."""

import pytest

from router.upstream import Upstream


@pytest.fixture()
async def up():
    u = Upstream()
    await u.start()
    yield u
    await u.close()
