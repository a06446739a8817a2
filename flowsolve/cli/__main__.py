"""``python -m flowsolve.cli`` (used under ``torchrun``)."""

import sys

from flowsolve.cli import main

sys.exit(main())
