"""Floor of the ``cli_cache_hit`` row: the least a process can do to serve the token that
``certauth token`` stored in the file cache, with the standard library and cryptography alone
(no certauth import).

    python benchmarks/floors/cache_hit.py PEM TOKEN_ENDPOINT CLIENT_ID SCOPE CACHE_DIR

It reads the very entry ``certauth token`` wrote: the key is derived as
``certauth.cache.EntryCipher`` derives it (HKDF-SHA256 over the private key's PKCS#8 DER), the
file is named as ``FileTokenCache`` names it (SHA-256 of the cache key) and the cache key is the
credential's (token endpoint, client id, the certificate's ``x5t#S256``, the scope). AES-GCM
opens it with the cache key as associated data; the token is printed if it is not yet due for
renewal.
Run as a script (``python FILE``), as the ``certauth`` command is.
"""

import base64
import hashlib
import json
import os
import sys
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

FORMAT = b"certauth-cache-v1"


def main() -> int:
    pem_path, token_endpoint, client_id, scope, cache_dir = sys.argv[1:]
    with open(pem_path, "rb") as file:
        pem = file.read()
    # The certificate's DER is the base64 between the PEM markers: its SHA-256 is x5t#S256.
    begin = pem.index(b"-----BEGIN CERTIFICATE-----") + len(b"-----BEGIN CERTIFICATE-----")
    der = base64.b64decode(pem[begin : pem.index(b"-----END CERTIFICATE-----", begin)])
    x5t_s256 = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    key = serialization.load_pem_private_key(pem, None, unsafe_skip_rsa_key_validation=True)
    secret = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    entry_key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=FORMAT, info=b"token cache key"
    ).derive(secret)
    name = "\x1f".join((token_endpoint, client_id, f"x5t#S256:{x5t_s256}", scope))
    file_name = hashlib.sha256(name.encode()).hexdigest()[:40] + ".token"
    with open(os.path.join(cache_dir, file_name), "rb") as file:
        blob = file.read()
    body = blob[len(FORMAT) + 1 :]
    plain = AESGCM(entry_key).decrypt(body[:12], body[12:], name.encode())
    entry = json.loads(plain)
    # Served until it is due for renewal, as certauth's credential serves it: the server's
    # refresh_in, else half its lifetime, and never with less than 5 minutes left.
    expires_on, lifetime = entry["expires_on"], entry["expires_in"]
    usable_until = expires_on - min(300, lifetime / 2)
    if time.time() >= min(entry["refresh_on"] or expires_on - lifetime / 2, usable_until):
        print("the cached token is due for renewal", file=sys.stderr)
        return 1
    print(entry["access_token"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
