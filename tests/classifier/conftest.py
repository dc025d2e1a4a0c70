from __future__ import annotations

from pathlib import Path

import pytest

from classifier import Classifier
from classifier.training.fixture import write_fixture


@pytest.fixture(scope="session")
def clf() -> Classifier:
    return Classifier.load()


@pytest.fixture(scope="session")
def fixture_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fixture(tmp_path_factory.mktemp("clf") / "routing_fixture.jsonl", n=300)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, fixture_file: Path) -> tuple[Path, dict]:
    from classifier.training.train import train

    out = tmp_path_factory.mktemp("art") / "model.json"
    summary = train([fixture_file], out)
    return out, summary
