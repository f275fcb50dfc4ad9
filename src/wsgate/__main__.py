"""``python -m wsgate`` runs the same command line as the ``wsgate`` script."""

import sys

from wsgate.cli import main

sys.exit(main())
