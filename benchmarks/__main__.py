"""`python -m benchmarks`: the benchmark harness (harness.py)."""

from .harness import main

raise SystemExit(main())
