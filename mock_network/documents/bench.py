"""Generation speed per document kind: ``python -m mock_network.documents.bench [N]``.

"first" runs on people not seen before (their facts are derived); "repeat" asks for another
document of the same people (their facts come from the in-process cache).
"""

from __future__ import annotations

import datetime as dt
import sys
import time

from .generate import make_document
from .model import DocSubject, DocumentMix

_MIXES = {
    "fhir": DocumentMix(1, 0, 0, 0),
    "ccda": DocumentMix(0, 1, 0, 0),
    "pdf": DocumentMix(0, 0, 1, 0),
    "text": DocumentMix(0, 0, 0, 1),
}


def main(n: int = 2000) -> None:
    for offset, (name, mix) in enumerate(_MIXES.items()):
        subjects = [
            DocSubject(
                offset * n + k, f"P{k}", "Ana", "Lee", dt.date(1930 + k % 90, 3, 4), "female"
            )
            for k in range(n)
        ]
        timings = []
        size = 0
        for shift in (0, 1):
            start = time.perf_counter()
            for k, s in enumerate(subjects):
                size += len(make_document(s, "org-a", "A", 1, (k + shift) % 8, mix).body)
            timings.append(time.perf_counter() - start)
        first, repeat = (n / t for t in timings)
        print(
            f"{name:5s} first {first:7.0f} docs/s  repeat {repeat:7.0f} docs/s  "
            f"mean {size / (2 * n) / 1024:5.1f} KiB"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
