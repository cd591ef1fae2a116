"""``python -m bench``: run the benchmarks."""

from .run import main

raise SystemExit(main())
