"""Counting the AWS API calls cloudq makes, with botocore's own event hooks (never a stub of boto3).

:class:`AwsCalls` wraps the factory every cloudq client comes from (:mod:`cloudq.aws.clients`): each boto3
or aioboto3 client built while it is installed gets two handlers on its event emitter, one that records the
request's parameters as the caller gave them (``before-parameter-build``) and one that adds the parsed
answer (``after-call``). The calls then really go to LocalStack; the record says what cloudq asked, which
cloudq's own counters (``SqsBroker.calls``) cannot prove about themselves. One entry per API call: the
HTTP retries botocore makes inside a call are not separate entries, a retry by tenacity is.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import pytest

from cloudq.aws import clients

__all__ = ["AwsCall", "AwsCalls", "entries", "received"]

_CONTEXT_KEY = "cloudq_test_call"


@dataclass
class AwsCall:
    """One API call: ``operation`` is AWS's name (``ReceiveMessage``), ``params`` what cloudq passed."""

    service: str
    operation: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)  # for event order only, never for speed
    response: dict[str, Any] | None = None  # None until it answers (or when it failed)


class AwsCalls:
    """The calls of every client cloudq builds while :meth:`install`-ed, in the order they were made."""

    def __init__(self) -> None:
        self.calls: list[AwsCall] = []
        self._lock = threading.Lock()

    # -- recording -------------------------------------------------------------------------------
    def watch(self, client: Any) -> Any:
        events = client.meta.events
        events.register("before-parameter-build", self._before)
        events.register("after-call", self._after)
        return client

    def _before(self, params: dict[str, Any], model: Any, context: dict[str, Any] | None = None, **_: Any) -> None:
        call = AwsCall(model.service_model.service_name, model.name, dict(params))
        if context is not None:
            context[_CONTEXT_KEY] = call
        with self._lock:
            self.calls.append(call)

    def _after(self, parsed: dict[str, Any], context: dict[str, Any] | None = None, **_: Any) -> None:
        if context is not None and _CONTEXT_KEY in context:
            context[_CONTEXT_KEY].response = parsed

    def install(self, monkeypatch: pytest.MonkeyPatch) -> AwsCalls:
        """Wrap ``cloudq.aws.clients.client`` and ``aclient``: clients built from now on are watched."""
        real_client, real_aclient = clients.client, clients.aclient

        def client(*args: Any, **kwargs: Any) -> Any:
            return self.watch(real_client(*args, **kwargs))

        def aclient(*args: Any, **kwargs: Any) -> AbstractAsyncContextManager[Any]:
            return _Watched(real_aclient(*args, **kwargs), self.watch)

        monkeypatch.setattr(clients, "client", client)
        monkeypatch.setattr(clients, "aclient", aclient)
        return self

    # -- reading ---------------------------------------------------------------------------------
    def of(self, *operations: str) -> list[AwsCall]:
        with self._lock:
            return [c for c in self.calls if not operations or c.operation in operations]

    def counts(self) -> Counter[str]:
        return Counter(c.operation for c in self.of())

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()


class _Watched:
    """aioboto3's client context manager, with ``watch`` applied to the client it opens."""

    def __init__(self, inner: AbstractAsyncContextManager[Any], watch: Callable[[Any], Any]) -> None:
        self._inner = inner
        self._watch = watch

    async def __aenter__(self) -> Any:
        return self._watch(await self._inner.__aenter__())

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._inner.__aexit__(*exc)


def entries(calls: list[AwsCall]) -> int:
    """How many messages a list of batch calls carried (``Entries`` of each)."""
    return sum(len(c.params.get("Entries", [])) for c in calls)


def received(call: AwsCall) -> int:
    """How many messages a ReceiveMessage call brought back."""
    return len((call.response or {}).get("Messages", []))
