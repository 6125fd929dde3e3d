import pykka
import pytest

from tests.postgres import pg_dsn, postgres_server  # noqa: F401  (a real PostgreSQL server)


@pytest.fixture(autouse=True)
def _stop_all_actors():
    """Every actor a test starts is stopped after it, even when the test fails."""
    yield
    pykka.ActorRegistry.stop_all(block=True, timeout=5)
