import pykka
import pytest


@pytest.fixture(autouse=True)
def _stop_all_actors():
    """Every actor a test starts is stopped after it, even when the test fails."""
    yield
    pykka.ActorRegistry.stop_all(block=True, timeout=5)
