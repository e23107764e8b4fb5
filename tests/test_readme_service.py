"""The README's service quick start runs as written (with the CI variables of an emulator)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from _docs import section

from certauth.certificates import Certificate
from certauth.emulator import Emulator


def service_example() -> str:
    match = re.search(r"```python[^\n]*\n(.*?)\n```", section("service"), re.DOTALL)
    assert match, "the service quick start has no python block"
    return match.group(1)


def test_service_quick_start_runs(rsa_cert: Certificate, tmp_path: Path) -> None:
    pem = tmp_path / "app.pem"
    pem.write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
    with Emulator(strict=True) as tenant:
        tenant.register("readme-service", rsa_cert)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
        env.update(
            AZURE_TENANT_ID=tenant.tenant_id,
            AZURE_CLIENT_ID="readme-service",
            AZURE_CLIENT_CERTIFICATE_PATH=str(pem),
            AZURE_AUTHORITY_HOST=tenant.authority_host,
        )
        proc = subprocess.run(
            [sys.executable, "-c", service_example()],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("token expires at ")
        assert tenant.request_count == 1
