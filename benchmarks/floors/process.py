"""Floor of the ``process`` row: the least a process can do to get one token with a
certificate, with the standard library and cryptography alone (no certauth import).

    python benchmarks/floors/process.py PEM TOKEN_ENDPOINT CLIENT_ID SCOPE CA_FILE

It loads the key from the PEM file, builds and signs a PS256 client assertion as certauth does
for an Entra authority (header ``x5t#S256``; ``aud``, ``iss``, ``sub``, a fresh ``jti``, ``iat``,
``nbf``, ``exp``: RFC 7523), sends one https POST over a TLS connection verified against
``CA_FILE`` (``ssl.create_default_context(cafile=...)``) with ``http.client``, and prints the
access token. Run as a script (``python FILE``), as the process row's ``python -c`` is.
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


def main() -> int:
    pem_path, token_endpoint, client_id, scope, ca_file = sys.argv[1:]
    with open(pem_path, "rb") as file:
        pem = file.read()
    begin = pem.index(b"-----BEGIN CERTIFICATE-----") + len(b"-----BEGIN CERTIFICATE-----")
    der = base64.b64decode(pem[begin : pem.index(b"-----END CERTIFICATE-----", begin)])
    key = serialization.load_pem_private_key(pem, None, unsafe_skip_rsa_key_validation=True)
    assert isinstance(key, rsa.RSAPrivateKey)
    header = {"alg": "PS256", "typ": "JWT", "x5t#S256": b64url(hashlib.sha256(der).digest())}
    now = int(time.time())
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
