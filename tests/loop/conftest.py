"""Loop fixtures: the serving area's real server and stub factories."""

from tests.serving.conftest import start_server, stub_for

__all__ = ["start_server", "stub_for"]
