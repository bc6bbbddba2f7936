"""``python -m nublado_sync`` runs the ``nublado-sync`` command."""

import sys

from ._cli import main

sys.exit(main())
