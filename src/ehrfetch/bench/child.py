"""Run one ``ehrfetch`` command and write what it cost: ``python -m ehrfetch.bench.child
OUT.json COMMAND…``.

The throughput benchmark runs the pipeline exactly as an operator does (``ehrfetch
run``) but needs that process's own CPU time and peak RSS, which a parent cannot read
once the child has exited (``RUSAGE_CHILDREN`` would mix in the mock network and the
Prefect server). So the child reports them itself, whatever the command's outcome.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import orjson


def main() -> None:
    out = Path(sys.argv[1])
    started = time.monotonic()
    code: int | str | None = 0
    try:
        from ehrfetch.cli import app

        app(args=sys.argv[2:], prog_name="ehrfetch", standalone_mode=True)
    except SystemExit as done:
        code = done.code
    finally:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        out.write_bytes(
            orjson.dumps(
                {
                    "exit_code": code if isinstance(code, int) else 1,
                    "wall_s": time.monotonic() - started,
                    "cpu_s": usage.ru_utime + usage.ru_stime,
                    "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux: KiB
                }
            )
        )
    sys.exit(code)


if __name__ == "__main__":
    main()
