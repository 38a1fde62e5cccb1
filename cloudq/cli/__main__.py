"""``python -m cloudq.cli``, as when the CLI was one module: the same as ``python -m cloudq``."""

import sys

from cloudq.cli.command import main

sys.exit(main())
