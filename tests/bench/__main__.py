"""`python -m tests.bench`: the whole-system workload (see tests/bench/workload.py)."""

import sys

from tests.bench.workload import main

sys.exit(main())
