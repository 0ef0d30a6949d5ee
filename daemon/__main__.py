"""`python -m daemon` is `spind`."""

import sys

from daemon.cli import main

sys.exit(main())
