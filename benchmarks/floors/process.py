"""Floor of the ``process`` row: the least a process can do to get one token with a
certificate, with the standard library and cryptography alone (no certauth import).

    python benchmarks/floors/process.py [--unchecked] PEM TOKEN_ENDPOINT CLIENT_ID SCOPE CA_FILE

It loads the key and the certificate from the PEM file and checks, before sending anything,
what certauth must check (a request is never sent with a certificate the server would refuse):
the key belongs to the certificate, the certificate is valid now, RSA has at least 2048 bits.
Then it builds and signs a PS256 client assertion as certauth does for an Entra authority
(header ``x5t#S256``; ``aud``, ``iss``, ``sub``, a fresh ``jti``, ``iat``, ``nbf``, ``exp``:
RFC 7523), sends one https POST over a TLS connection verified against ``CA_FILE``
(``ssl.create_default_context(cafile=...)``) with ``http.client``, and prints the access token.

``--unchecked`` skips the certificate: its ``x5t#S256`` is hashed from the PEM's base64, and
nothing is checked (so ``cryptography.x509`` is not imported: ~30 ms, as reading any
certificate with cryptography imports it). It is reported beside the floor, for reference.
Run as a script (``python FILE``), as the process row's ``python -c`` is.
"""

import base64
import hashlib
import http.client
import json
import os
import ssl
import sys
import time
import urllib.parse

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def checked_certificate(pem: bytes, key: rsa.RSAPrivateKey, now: int) -> bytes | None:
    """The certificate's DER, if the key belongs to it, it is valid at ``now`` and its RSA
    key is large enough for Entra ID; else ``None``."""
    from cryptography import x509

    certificate = x509.load_pem_x509_certificate(pem)
    public = certificate.public_key()
    if not isinstance(public, rsa.RSAPublicKey) or key.key_size < 2048:
        return None
    if public.public_numbers() != key.public_key().public_numbers():
        return None
    valid = (
        certificate.not_valid_before_utc.timestamp(),
        certificate.not_valid_after_utc.timestamp(),
    )
    if not valid[0] <= now <= valid[1]:
        return None
    return certificate.public_bytes(serialization.Encoding.DER)


def main() -> int:
    unchecked = sys.argv[1] == "--unchecked"
    pem_path, token_endpoint, client_id, scope, ca_file = sys.argv[1 + unchecked :]
    with open(pem_path, "rb") as file:
        pem = file.read()
    key = serialization.load_pem_private_key(pem, None, unsafe_skip_rsa_key_validation=True)
    assert isinstance(key, rsa.RSAPrivateKey)
    now = int(time.time())
    if unchecked:
        begin = pem.index(b"-----BEGIN CERTIFICATE-----") + len(b"-----BEGIN CERTIFICATE-----")
        der: bytes | None = base64.b64decode(pem[begin : pem.index(b"-----END CERTIFICATE-----")])
    else:
        der = checked_certificate(pem, key, now)
    if der is None:
        print(
            "the certificate does not fit the key, is not valid now or is too weak", file=sys.stderr
        )
        return 1
    header = {"alg": "PS256", "typ": "JWT", "x5t#S256": b64url(hashlib.sha256(der).digest())}
    claims = {
        "aud": token_endpoint,
        "iss": client_id,
        "sub": client_id,
        "jti": os.urandom(16).hex(),
        "iat": now,
        "nbf": now,
        "exp": now + 300,
    }
    signing_input = ".".join(
        b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    ).encode("ascii")
    signature = key.sign(
        signing_input,
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH),
        hashes.SHA256(),
    )
    body = urllib.parse.urlencode(
        {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "scope": scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": f"{signing_input.decode('ascii')}.{b64url(signature)}",
        }
    )
    url = urllib.parse.urlsplit(token_endpoint)
    context = ssl.create_default_context(cafile=ca_file)
    connection = http.client.HTTPSConnection(
        url.hostname or "", url.port, context=context, timeout=30
    )
    connection.request(
        "POST",
        url.path,
        body,
        {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
    )
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    if response.status != 200:
        print(f"HTTP {response.status}: {answer}", file=sys.stderr)
        return 1
    print(answer["access_token"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
