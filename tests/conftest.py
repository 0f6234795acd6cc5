# tests/ is not a package and the repo root is not on sys.path under `.venv/bin/pytest`,
# but pytest puts this directory on sys.path (rootdir-relative "prepend" import mode).
import pytest
from kafka_support import *  # noqa: F403

from streams.core import native


def pytest_configure(config: pytest.Config) -> None:
    """Where the native module is required (``TUNNELWATCH_NATIVE=1``, as CI sets it when
    cargo exists), a missing or stale one stops the run: the native-vs-Python tests would
    otherwise skip without a word."""
    try:
        native.load()
    except native.NativeUnavailable as exc:
        raise pytest.UsageError(f"the native module is required: {exc}") from exc
