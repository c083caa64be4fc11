"""``python -m tinyimg`` = the ``tinyimg`` command."""

import sys

from tinyimg.cli import main

sys.exit(main())
