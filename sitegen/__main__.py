"""``python -m sitegen`` is the ``sitegen`` command."""

import sys

from .cli import main

sys.exit(main())
