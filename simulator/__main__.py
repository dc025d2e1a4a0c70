"""`python -m simulator --port N [--latency-ms ...]`: run the simulated upstream in the foreground."""

import os
import signal
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from simulator.server import main  # noqa: E402

# Exit cleanly on SIGTERM so whoever started us (triage serve, benches) sees a normal shutdown.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
main()
