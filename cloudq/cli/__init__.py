"""The ``cloudq`` command (also ``python -m cloudq``).

APP is ``module:attribute`` naming a :class:`cloudq.App`, or taken from ``CLOUDQ_APP``.
Exit codes: 0 success, 1 a runtime failure (broker, missing queue), 2 bad input.

One module per command group; none imports this package back, and each keeps its heavy imports
inside its commands:

* :mod:`cloudq.cli.command`    the top-level parser and ``main`` (dispatch, exit codes)
* :mod:`cloudq.cli.loading`    ``load_app``, shared by every group
* :mod:`cloudq.cli.runtimes`   ``worker``, ``lambda-local``, ``health``: what a container runs
* :mod:`cloudq.cli.jobs`       ``enqueue``, ``schema``, ``demo`` (its runner: :mod:`cloudq.cli.demo`)
* :mod:`cloudq.cli.ops`        ``status``, ``dlq peek|redrive``, ``purge``: on-call
* :mod:`cloudq.cli.schedules`  ``schedules sync|list``: EventBridge
* :mod:`cloudq.cli.infra`      ``infra render``, ``queues ensure``: infrastructure from the registry
"""

from cloudq.cli.command import build_parser, main
from cloudq.cli.loading import load_app

__all__ = ["build_parser", "load_app", "main"]
