"""The keys that never leave their store, for the signer rows of the benchmark.

* PKCS#11: a SoftHSM2 token initialised in the run's temporary directory (``SOFTHSM2_CONF``
  points there, as in ``tests/signers/conftest.py``), an RSA-2048 key pair generated inside it
  (sensitive, non-extractable) and its certificate signed by the token
  (:func:`certauth.signers.pkcs11.generate_certificate_in_token`). Needs ``softhsm2-util``, the
  SoftHSM2 module and python-pkcs11 (the ``pkcs11`` extra); without them the rows are skipped
  with the reason (:func:`softhsm_missing`).
* Key Vault: the emulator's vault in the token endpoint's process (``benchmarks._server
  --vault``), signed through :class:`certauth.signers.keyvault.KeyVaultSigner` with the bench
  app's own file-key credential as the vault credential (its vault token is cached after the
  signer is opened, so each signature is one HTTPS request).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: Where distributions put the SoftHSM2 module (Debian/Ubuntu first).
SOFTHSM_MODULES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
)
TOKEN_LABEL = "certauth-bench"
KEY_LABEL = "bench"


def softhsm_module() -> str | None:
    """The SoftHSM2 module's path, if one is installed."""
    return next((path for path in SOFTHSM_MODULES if os.path.isfile(path)), None)


def softhsm_missing() -> str | None:
    """Why the PKCS#11 rows cannot run here, or ``None`` when they can."""
    if shutil.which("softhsm2-util") is None:
        return "softhsm2-util is not installed (scripts/ensure-services installs SoftHSM2)"
    if softhsm_module() is None:
        return "the SoftHSM2 module (libsofthsm2.so) is not installed"
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        return "python-pkcs11 is not installed (pip install 'certauth-toolkit[pkcs11]')"
    return None


@contextmanager
def softhsm_signer(folder: Path) -> Iterator[Any]:
    """A :class:`~certauth.signers.pkcs11.Pkcs11Signer` over a new RSA-2048 key in a new
    SoftHSM2 token under ``folder`` (call :func:`softhsm_missing` first). ``SOFTHSM2_CONF`` is
    set for this process while the signer is in use (SoftHSM2 reads it when the module is
    initialised); the PIN is random, for this run only."""
    from certauth.signers.pkcs11 import generate_certificate_in_token

    module = softhsm_module()
    assert module is not None
    tokens = folder / "softhsm-tokens"
    tokens.mkdir()
    conf = folder / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n",
        encoding="utf-8",
    )
    pin, so_pin = secrets.token_hex(8), secrets.token_hex(8)
    saved = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    try:
        subprocess.run(
            [
                *("softhsm2-util", "--init-token", "--free", "--label", TOKEN_LABEL),
                *("--pin", pin, "--so-pin", so_pin),
            ],
            env=dict(os.environ),
            check=True,
            capture_output=True,
        )
        with generate_certificate_in_token(
            f"pkcs11:token={TOKEN_LABEL};object={KEY_LABEL}",
            "CN=certauth-bench-pkcs11",
            key_type="rsa2048",
            module=module,
            pin=pin,
        ) as signer:
            try:
                yield signer
            finally:
                signer.close()
    finally:
        if saved is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = saved
