"""Shared pieces of the hardening tests: Hypothesis settings and strategies for hostile input.

Not a test module (leading underscore); the tests import it by name (pytest puts this folder on
``sys.path``).

The property tests guard against crashes on hostile input, not against rare arithmetic corner
cases, so a modest number of derandomized examples (the same on every run: CI is never flaky)
keeps the whole hardening set well under its 30-second budget. ``HYPOTHESIS_PROFILE=explore``
searches with fresh random examples, ten times as many.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

_EXPLORE = os.environ.get("HYPOTHESIS_PROFILE") == "explore"


def budget(examples: int) -> settings:
    """Settings for one property test: ``examples`` derandomized examples (x10 to explore)."""
    return settings(
        max_examples=examples * 10 if _EXPLORE else examples,
        derandomize=not _EXPLORE,
        deadline=None,  # loopback and RSA timings vary on a loaded CI machine
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def b64url(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


#: Values that broke parsers somewhere: non-ASCII digits, 5,000-digit numbers, floats out of
#: range, NaN, control characters, surrogates' neighbours, empty and huge strings.
NASTY_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "\u00b2",  # a digit to str.isdigit(), not to int()
        "\u0663",  # ARABIC-INDIC DIGIT THREE
        "9" * 5000,
        "1e400",
        "-1",
        " 12 ",
        "\x00",
        "\r\nX-Injected: 1",
        "\u00e9",
        "\ufeff",
        "=",
        "==",
        "a.b.c",
        "%",
        "%zz",
        "Basic ",
        "Bearer ",
        "x" * 3000,
        "AADSTS" + "9" * 5000,
    ]
)
#: JSON nested past Python's recursion limit.
DEEP_JSON = b"[" * 5000 + b"]" * 5000
NASTY_NUMBERS = st.sampled_from(
    [0, -1, 2**31, 2**63, 10**30, -(10**30), 1e300, -1e300, 1e-300, 0.5, True, False]
)

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | NASTY_STRINGS
    | NASTY_NUMBERS
)
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def json_bytes(value: Any) -> bytes:
    """JSON as a hostile server would send it: NaN and Infinity literals included."""
    return json.dumps(value, allow_nan=True).encode("utf-8")


def objects(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects with any subset of ``fields`` plus a few unknown members."""
    return st.builds(
        lambda known, extra: {**extra, **known},
        st.fixed_dictionaries({}, optional=fields),
        st.dictionaries(st.text(max_size=8), JSON_SCALARS, max_size=2),
    )


#: Bytes that are, or are close to, a JSON document.
def documents(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[bytes]:
    """A JSON object with ``fields``, any JSON value, or arbitrary bytes."""
    return (
        objects(fields).map(json_bytes)
        | JSON_VALUES.map(json_bytes)
        | st.binary(max_size=200)
        | st.sampled_from([DEEP_JSON, b'{"a":' * 3000, b"\xff\xfe{}", b"NaN", b"1e400"])
    )


def jwt_shaped(
    header: st.SearchStrategy[Any], claims: st.SearchStrategy[Any]
) -> st.SearchStrategy[str]:
    """``header.claims.signature`` with each part well-formed, malformed or hostile."""
    hostile = st.sampled_from([b64url(DEEP_JSON), b64url(b'{"a":NaN}'), "e30="])
    segment = (
        st.builds(lambda v: b64url(json_bytes(v)), header)
        | st.binary(max_size=40).map(b64url)
        | st.text(max_size=20)
        | hostile
    )
    body = (
        st.builds(lambda v: b64url(json_bytes(v)), claims)
        | st.binary(max_size=40).map(b64url)
        | st.text(max_size=20)
        | hostile
    )
    signature = st.binary(max_size=300).map(b64url) | st.text(max_size=20) | NASTY_STRINGS
    return st.builds(lambda h, c, s: f"{h}.{c}.{s}", segment, body, signature) | st.text(
        max_size=60
    )
