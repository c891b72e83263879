"""selfdev's pytest plugin supplies the fixtures (selfdev_engine, selfdev_iteration,
selfdev_digits, ...); this file only names the plugin every engine registers."""
import pytest

import selfdev_breadcrumbs


@pytest.fixture
def selfdev_plugins():
    return [selfdev_breadcrumbs]
