"""``python -m cloudq`` is the ``cloudq`` command."""

import sys

from cloudq.cli import main

sys.exit(main())
