"""Runtimes: what drives the consumer core in a process.

* :mod:`cloudq.runtimes.worker`: the long-polling worker (``cloudq worker``, the ECS container).
* :mod:`cloudq.runtimes.aws_lambda`: the AWS Lambda handler (``app.lambda_handler``).
* :mod:`cloudq.runtimes.lambda_local`: the SQS event source mapping, emulated (``cloudq lambda-local``).

Each keeps only what is its own (polling and slots; event shapes and deadlines) and hands every
delivery to :class:`cloudq.consumer.Consumer`, which runs it and carries out its fate.
"""
