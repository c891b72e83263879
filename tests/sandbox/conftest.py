import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from sandbox_helpers import make_inputs  # noqa: E402


@pytest.fixture(scope="session")
def inputs():
    return make_inputs()


@pytest.fixture(scope="module")
def sb(inputs):
    """One warm Sandbox per test module."""
    from selfdev.sandbox import Sandbox
    base, tvs = inputs
    with Sandbox(base, tvs, timeout=10.0) as s:
        yield s
