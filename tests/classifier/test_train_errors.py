"""Training refuses data it cannot learn from, with a message that says what to add."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from classifier.training.train import train


def test_ledger_export_with_one_label_is_refused_clearly(tmp_path: Path) -> None:
    rows = [{"request_id": f"r{i}", "tenant": "t", "tier": "fast", "model": "small", "complexity": 0.1,
             "prompt": f"what time is it in city {i}?", "quality": 0.9, "cost_usd": 0.00001} for i in range(40)]
    data = tmp_path / "ledger.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(ValueError, match="same label"):
        train([data], tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()
