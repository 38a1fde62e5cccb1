"""cloudq's benchmarks: ``python -m bench`` (``make bench``). See bench/README.md.

* :mod:`bench.sqs_drain`  a cloudq Worker vs the best raw boto3 loop draining no-op jobs on LocalStack
* :mod:`bench.producer`   ``.delay()`` vs raw ``send_message`` (``.map()`` is timed while filling the drains)
* :mod:`bench.cli_drain` spawned processes: ``cloudq worker`` vs a raw boto3 loop's process, ``.map()`` in a fresh script
* :mod:`bench.startup`   start-up to first job of both, by phase; :mod:`bench.profile_cli` py-spy of a spawned drain
* :mod:`bench.local`      the local SQLite broker vs Huey's SqliteHuey, enqueue and drain
"""
