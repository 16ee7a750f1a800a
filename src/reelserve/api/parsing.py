"""Reading values from hostile input: the one JSON parser and integer parser of every dialect.

- :func:`parse_json` / :func:`read_json`: nesting is bounded (:data:`MAX_JSON_DEPTH`) and a lone
  UTF-16 surrogate (``"\\ud800"``: valid JSON, not valid Unicode) is refused here, so no string
  that cannot be encoded reaches a store, a log or a response writer (each of which used to
  answer 500).
- :func:`ascii_int` / :func:`parse_int`: integers from query and form values. Only ASCII digits
  and at most :data:`MAX_INT_DIGITS` of them: ``str.isdigit()`` also accepts ``²`` (which
  ``int()`` refuses) and ``int()`` of 5000 digits is slow and refused by Python itself.

The request-level guards (body cap, Host/Origin checks) are in :mod:`reelserve.api.guards`.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

from reelserve.errors import ValidationError

if TYPE_CHECKING:
    from starlette.requests import Request

MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays/objects a JSON body may have (wire shapes need about 5)."""

MAX_INT_DIGITS = 18
"""Most digits an integer query/form value may have (fits in 63 bits)."""

# Bodies up to this many bytes are parsed on the event loop; bigger ones in a thread.
_INLINE_JSON_BYTES = 256 * 1024
# Lone UTF-16 surrogates: json.loads turns "\ud800" into one; str.encode("utf-8") then fails.
_SURROGATE = re.compile("[\ud800-\udfff]")


# ================================================================================================
# JSON
# ================================================================================================


def parse_json(data: bytes | str, *, parameter: str = "body", what: str = "the request body",
               code: str = "invalidJson") -> Any:
    """Parse JSON, refusing (``code``, naming ``parameter``) what is not valid JSON, nests deeper
    than :data:`MAX_JSON_DEPTH` or carries a lone surrogate in a string or key."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise ValidationError(code, f"{what} nests JSON arrays/objects too deeply; the limit is "
                              f"{MAX_JSON_DEPTH} levels", parameter=parameter) from None
    except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError for invalid UTF-8
        raise ValidationError(code, f"{what} is not valid JSON: {exc}",
                              parameter=parameter) from None
    _check_tree(value, parameter=parameter, what=what, code=code)
    return value


def _check_tree(value: Any, *, parameter: str, what: str, code: str) -> None:
    # Iterative (no recursion to exhaust): depth of containers, and every string and key.
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise ValidationError(
                    code, f"{what} holds a lone UTF-16 surrogate escape (such as \\ud800) in "
                    f"the string {item.encode('utf-8', 'backslashreplace').decode()[:60]!r}; "
                    "strings must be valid Unicode", parameter=parameter)
        elif isinstance(item, (list, dict)):
            if depth >= MAX_JSON_DEPTH:
                raise ValidationError(code, f"{what} nests JSON arrays/objects too deeply; the "
                                      f"limit is {MAX_JSON_DEPTH} levels", parameter=parameter)
            if isinstance(item, dict):
                stack.extend((key, depth + 1) for key in item)
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)


async def parse_json_async(data: bytes | str, **kwargs: Any) -> Any:
    """:func:`parse_json`, in a thread when ``data`` is big (the event loop keeps serving)."""
    if len(data) > _INLINE_JSON_BYTES:
        return await run_in_threadpool(lambda: parse_json(data, **kwargs))
    return parse_json(data, **kwargs)


async def read_json(request: Request, *, empty: Any = None, code: str = "invalidJson") -> Any:
    """The request body parsed by :func:`parse_json` (``empty`` for an empty body when given).

    The body was capped while it streamed in (:class:`BodyLimitMiddleware`)."""
    body = await request.body()
    if not body and empty is not None:
        return empty
    return await parse_json_async(body, code=code)


def has_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone UTF-16 surrogate (form values can carry them too)."""
    return _SURROGATE.search(text) is not None


# ================================================================================================
# Integers
# ================================================================================================


def ascii_int(raw: str | None, *, max_digits: int = MAX_INT_DIGITS) -> int | None:
    """``raw`` as a non-negative integer when it is 1 to ``max_digits`` ASCII digits, else None."""
    if not raw or len(raw) > max_digits or not raw.isascii() or not raw.isdigit():
        return None
    return int(raw)


def parse_int(raw: str | None, *, name: str, minimum: int, maximum: int,
              default: int | None = None, code: str = "invalidParameter") -> int:
    """A query/form integer from ``minimum`` to ``maximum`` (``default`` when absent or empty);
    anything else is ``code`` naming ``name``, the value and the range."""
    if (raw is None or raw == "") and default is not None:
        return default
    value = ascii_int(raw)
    if value is None or not minimum <= value <= maximum:
        raise ValidationError(code, f"{name} must be an integer from {minimum} to {maximum}, "
                              f"got {raw!r:.40}", parameter=name)
    return value
