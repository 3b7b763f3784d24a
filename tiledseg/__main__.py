"""``python -m tiledseg``: the command line, as the ``tiledseg`` script."""

import sys

from tiledseg.cli import main

sys.exit(main())
