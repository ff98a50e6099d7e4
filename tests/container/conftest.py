"""The container tests run only under `make test-container`, which prepares podman, the base
image and the wheels first (prepare.sh); a plain `pytest` leaves them out."""

import os

collect_ignore_glob = [] if os.environ.get("FWATCHDOG_CONTAINER_TEST") == "1" else ["test_*.py"]
