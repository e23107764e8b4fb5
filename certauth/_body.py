"""A response body as certauth's drivers read it: decoded and capped as it streams.

Both of certauth's HTTP stacks read bodies through this (certauth's own sync client,
:mod:`certauth._transport`, and the httpx drivers in :mod:`certauth._http`), so the cap of
:data:`~certauth.protocol.MAX_RESPONSE_BYTES` holds for the decoded bytes on each.
"""

from __future__ import annotations

import zlib
from typing import Any

from certauth.protocol import MAX_RESPONSE_BYTES

__all__ = ["BodyDecoder", "DecodingError"]


class DecodingError(Exception):
    """A body that cannot be decoded in the coding its ``Content-Encoding`` names."""


# -- Content-Encoding, decoded under the cap ----------------------------------------------------


class BodyDecoder:
    """Undoes a response's Content-Encoding (RFC 9110 section 8.4) as the body streams, never
    producing more than the caller asks for, so the cap holds for the decoded bytes: a 1 MiB
    gzip body that inflates to 1 GiB costs the cap in memory, not a gigabyte.

    One ``gzip`` or ``deflate`` coding is decoded (what :data:`certauth._http.ACCEPT_ENCODING`
    asks for); a body in any other coding is kept as sent, as httpx does, and then fails as
    "not JSON".
    """

    __slots__ = ("_first", "_inflater", "_may_be_raw")

    def __init__(self, content_encoding: str) -> None:
        codings = [c.strip().lower() for c in content_encoding.split(",")]
        codings = [c for c in codings if c and c != "identity"]
        self._inflater: Any = None
        self._first = True
        self._may_be_raw = False
        if codings == ["gzip"] or codings == ["x-gzip"]:
            self._inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif codings == ["deflate"]:
            self._inflater = zlib.decompressobj()
            self._may_be_raw = True  # a first chunk zlib refuses is tried as raw deflate

    def take(self, body: bytearray, chunk: bytes) -> bool:
        """Append ``chunk``, decoded, to ``body``; True once the body is over the cap (the
        answer is refused as too large: a 100 MB "token response" is dropped, not buffered,
        and the reader stops there)."""
        body += self.decode(chunk, MAX_RESPONSE_BYTES + 1 - len(body))
        return len(body) > MAX_RESPONSE_BYTES

    def decode(self, data: bytes, limit: int) -> bytes:
        """The next decoded bytes, at most ``limit`` of them (more is cut: the body is then
        over the cap and refused anyway)."""
        if self._inflater is None:
            return data if len(data) <= limit else data[:limit]
        first, self._first = self._first, False
        try:
            # max_length: zlib stops there and keeps the rest of the input unread.
            decoded: bytes = self._inflater.decompress(data, limit)
        except zlib.error as exc:
            if first and self._may_be_raw:
                # RFC 9110 section 8.4.1.2 says zlib format; some servers send raw deflate.
                self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
                self._may_be_raw = False
                return self.decode(data, limit)
            raise DecodingError(f"cannot decode the body: {exc}") from None
        return decoded
