"""One Prefect test server for every flow test of the session.

Starting a Prefect server costs seconds, so it is started once (session scope) and
each test reads only what its own flow run produced. Prefect's home (its settings,
logs, local storage) is a folder of this pytest session, never the user's home, and
nothing is sent anywhere: analytics off, no Prefect Cloud.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

PREFECT_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_API_KEY": "",
    "PREFECT_CLOUD_API_URL": "http://127.0.0.1:9/unused",
    # The flows' log lines belong in the test report only when a test fails.
    "PREFECT_LOGGING_TO_API_ENABLED": "false",
}


@pytest.fixture(scope="session", autouse=True)
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    home = tmp_path_factory.mktemp("prefect-home")
    # Set in the environment before Prefect is imported, so the server subprocess
    # inherits them too.
    previous = {name: os.environ.get(name) for name in [*PREFECT_ENV, "PREFECT_HOME"]}
    os.environ.update(PREFECT_ENV, PREFECT_HOME=str(home))
    from prefect.testing.utilities import prefect_test_harness

    try:
        import prefect.server.api.server  # noqa: F401  (what the server process imports)
    except TypeError as exc:
        # Prefect 3.8's server passes Body(min_items=...), which FastAPI >= 0.155 refuses.
        pytest.fail(f"the Prefect server cannot start here (FastAPI too new?): {exc}")
    try:
        with prefect_test_harness(server_startup_timeout=60):
            yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
