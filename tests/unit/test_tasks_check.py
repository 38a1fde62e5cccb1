"""Task.check: the worker's argument check per job, counted for plain signatures, agrees with Signature.bind."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import cloudq
from cloudq.errors import ArgumentsError

pytestmark = pytest.mark.unit


def f0() -> None: ...
def f2(a: Any, b: Any) -> None: ...
def f_default(a: Any, b: Any = 1) -> None: ...
def f_posonly(a: Any, /, b: Any) -> None: ...
def f_star(a: Any, *rest: Any) -> None: ...
def f_kwonly(a: Any, *, b: Any) -> None: ...
def f_kw(**kw: Any) -> None: ...


CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((), {}), ((1,), {}), ((1, 2), {}), ((1, 2, 3), {}), ((), {"a": 1}), ((1,), {"b": 2}), ((), {"a": 1, "b": 2}),
    ((1,), {"a": 2}), ((), {"c": 3}),
]


@pytest.mark.parametrize("fn", [f0, f2, f_default, f_posonly, f_star, f_kwonly, f_kw], ids=lambda f: f.__name__)
def test_check_accepts_exactly_what_bind_accepts(fn: Any) -> None:
    app = cloudq.App("checks", settings=cloudq.Settings(broker="memory"))
    task = app.task(name=f"t.{fn.__name__}")(fn)
    for args, kwargs in CALLS:
        try:
            inspect.signature(fn).bind(*args, **kwargs)
            fits = True
        except TypeError:
            fits = False
        if fits:
            task.check(args, kwargs)
        else:
            with pytest.raises(ArgumentsError, match="arguments do not fit task"):
                task.check(args, kwargs)
