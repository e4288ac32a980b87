"""SIGTERM in a batch worker process (``flows._workers._stop_the_run``).

The whole path — a worker signalled mid-run, the run stopped cleanly — is in
``test_crash_safety``; here, what the handler does with the stop file and a second signal.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows import _workers


@pytest.fixture
def restored() -> Iterator[None]:
    before = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)
        _workers.serving(None)


@pytest.mark.usefixtures("restored")
def test_sigterm_makes_the_runs_stop_file_and_a_second_one_is_left_to_kill(
    tmp_path: Path,
) -> None:
    stop_file = tmp_path / "stop"
    _workers.serving(stop_file)
    _workers._stop_the_run(signal.SIGTERM, None)
    assert stop_file.exists()  # the batch and the flow stop on it
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.parametrize(
    "stop_file",
    [None, "/nonexistent/ehrfetch-run/stop"],
    ids=["no-batch-yet", "run-folder-gone"],
)
def test_a_worker_that_cannot_stop_the_run_ends_on_sigterm(stop_file: str | None) -> None:
    # In a process of its own: the default action ends it.
    code = (
        "import signal; from pathlib import Path; from flows import _workers; "
        f"_workers.serving({stop_file!r} and Path({stop_file!r})); "
        "_workers._stop_the_run(signal.SIGTERM, None); print('still here')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGTERM, done.stderr.decode()[-2000:]
    assert b"still here" not in done.stdout
