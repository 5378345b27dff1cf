"""`adedge bench --papers --report benchmarks/results/papers`, as a script.

Every method at the papers' input sizes, side by side on this machine (the measurement lives in
``adedge.runtime.bench.papers``; its docstring says what is timed). Extra arguments go through:

    python benchmarks/papers.py --seconds 1 --threads 1 --cases ygan
"""

from __future__ import annotations

import sys

from adedge.cli import main

if __name__ == "__main__":
    sys.argv = ["adedge", "bench", "--papers", "--report", "benchmarks/results/papers"] + sys.argv[
        1:
    ]
    main()
