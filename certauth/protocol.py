"""OAuth 2.0 client-credentials messages: token requests and token responses (sans-I/O).

Shared by the sync and async credentials (which send what this builds) and by the emulator
(which receives it). RFC 6749 section 4.4 (client credentials), RFC 7521/7523 (assertions).
"""

from __future__ import annotations

__all__ = [
    "CLIENT_ASSERTION_TYPE",
    "GRANT_CLIENT_CREDENTIALS",
]

#: RFC 7523 section 2.2: the client_assertion_type for a JWT client assertion.
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: RFC 6749 section 4.4.2.
GRANT_CLIENT_CREDENTIALS = "client_credentials"
