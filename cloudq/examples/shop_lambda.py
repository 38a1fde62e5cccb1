"""The example app's AWS Lambda entry point: ``serverless.yml`` deploys ``cloudq/examples/shop_lambda.handler``.

Kept apart from :mod:`cloudq.examples.shop` on purpose: building the handler configures logging (JSON)
and creates the event loop and thread pool it keeps for warm invocations, which a worker or a web process
that imports the tasks must not get. Only the Lambda runtime imports this module.
"""

from __future__ import annotations

from cloudq.examples.shop import app

__all__ = ["app", "handler"]

handler = app.lambda_handler
