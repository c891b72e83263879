"""Session-wide test set-up: one private SELFDEV_HOME per test session (tiny models are built
once per session and cached there) and no third-party plugins unless a test asks for them."""
import os
import sys
import tempfile
from pathlib import Path

import pytest


def pytest_configure(config):
    sys._called_from_test = True
    if not os.environ.get("SELFDEV_TEST_KEEP_HOME"):
        home = Path(tempfile.mkdtemp(prefix="selfdev-test-home-"))
        os.environ["SELFDEV_HOME"] = str(home)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_unconfigure(config):
    del sys._called_from_test


def pytest_report_header(config):
    import sqlite3

    return f"SELFDEV_HOME={os.environ.get('SELFDEV_HOME')}  sqlite {sqlite3.sqlite_version}"


@pytest.fixture
def db_path(tmp_path):
    """A fresh event database file for one test."""
    return tmp_path / "runs.db"
