"""A started worker keeps the cyclic collector off its startup heap, and gives it back when it stops."""

from __future__ import annotations

import gc
import time

from router.state import GC_YOUNG_THRESHOLD


def test_startup_heap_is_frozen_across_a_reload_and_released_at_close(proxy) -> None:
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] >= GC_YOUNG_THRESHOLD
    before = gc.get_freeze_count()
    assert proxy.reload().status_code == 200
    assert gc.get_freeze_count() > 0  # frozen again after the old snapshot was let go
    assert abs(gc.get_freeze_count() - before) < before  # not frozen twice over
    key = proxy.create_key("t")
    r = proxy.client(key).chat.completions.create(model="triage/auto", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content
    proxy.server.should_exit = True
    deadline = time.monotonic() + 10
    while gc.get_freeze_count() and time.monotonic() < deadline:  # close() runs on the server's thread
        time.sleep(0.01)
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold()[0] < GC_YOUNG_THRESHOLD
