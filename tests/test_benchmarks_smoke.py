"""The benchmark must keep running: ``python -m benchmarks --smoke`` (tiny counts, every row,
all three libraries) in a subprocess, checked for a complete table and JSON file. That includes
the signer rows (SoftHSM2 and the emulated Key Vault): where SoftHSM2 or python-pkcs11 is
missing, the SoftHSM2 rows must say so (skipped, with the reason) instead of failing the run;
so must the fleet rows (a redis-server and a local Redis Cluster) without redis-server.

The rows with a floor (``benchmarks/floors/``: the same work with the standard library and
cryptography alone) run it too: the cache-hit row's floor reads the entry ``certauth token``
wrote and must print the same token.

The numbers are not checked here (a loaded CI machine would make that flaky); the full run
(``scripts/bench``) is what the README's Performance table comes from.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.redis_fleet import redis_missing
from benchmarks.signers import softhsm_missing

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("msal")
pytest.importorskip("azure.identity")


@pytest.mark.slow
def test_benchmark_smoke_run_reports_every_row(tmp_path: Path) -> None:
    result_file = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--json", str(result_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(result_file.read_text())
    rows = {row["key"]: row for row in result["rows"]}
    assert set(rows) == {
        "first_token",
        "first_token_pkcs11",
        "first_token_keyvault",
        "cached",
        "burst_posts",
        "burst_time",
        "process",
        "process_system_trust",
        "cli_cache_hit",
        "cli_version",
        "cli_help",
        "python_pass",
        "assertion",
        "assertion_pkcs11",
        "assertion_keyvault",
        "requests_first_token",
        "fleet_single",
        "fleet_cluster",
        "fleet_cluster_wait",
        "emulator_throughput",
    }
    for key in ("first_token", "cached", "burst_posts", "process", "assertion"):
        assert set(rows[key]["median"]) == {"certauth", "msal", "azure-identity"}, key
        assert all(value is not None for value in rows[key]["median"].values()), key
    # The rows measured against a floor script (benchmarks/floors/), interleaved with it: the
    # cache-hit row printed the floor's token (checked by the run) and sent no request.
    for key, floor in (("process", "process_floor"), ("cli_cache_hit", "cli_cache_hit_floor")):
        assert rows[key]["floor"]["key"] == floor, key
        assert rows[key]["floor"]["median"] > 0, key
        assert rows[key]["ratio_certauth_to_floor"] > 0, key
        assert rows[key]["meets_target"] is not None, key
    assert rows["process"]["floor"]["details"]["unchecked"]["median"] > 0
    assert set(rows["cli_cache_hit"]["median"]) == {"certauth"}
    assert "| floor | certauth/floor |" in done.stdout
    # Counts, unlike times, do not depend on the machine's load.
    assert rows["requests_first_token"]["median"]["certauth"] == 1
    assert rows["burst_posts"]["median"]["certauth"] == 1
    assert result["versions"]["msal"] != "not installed"
    assert result["versions"]["azure-identity"] != "not installed"
    assert "| first token" in done.stdout
    # The signer rows are certauth's alone; the Key Vault one always runs (the emulator's).
    missing = softhsm_missing()
    for key in (
        "first_token_pkcs11",
        "assertion_pkcs11",
        "first_token_keyvault",
        "assertion_keyvault",
    ):
        row = rows[key]
        if "pkcs11" in key and missing:
            assert row["skipped"] == missing, key
            assert row["median"] == {}, key
            continue
        assert row["skipped"] is None, key
        assert set(row["median"]) == {"certauth"}, key
        assert row["median"]["certauth"] > 0, key
    # The fleet rows (certauth's alone) need redis-server and the redis package; a cold fleet
    # makes one token request on one server and on the cluster, with or without WAIT.
    no_redis = redis_missing()
    for key in ("fleet_single", "fleet_cluster", "fleet_cluster_wait"):
        row = rows[key]
        if no_redis:
            assert row["skipped"] == no_redis, key
            continue
        assert row["median"] == {"certauth": 1}, key
        details = row["details"]["certauth"]
        assert details["token_requests"]["max"] == 1, key
        assert details["wall_ms_to_last_token"]["median"] > 0, key
        assert details["redis_commands_sent_per_call"]["median"] >= 2, key  # lock, read
        waits = details["executed_in_last_run"].get("wait", 0)
        assert (waits > 0) == key.endswith("_wait"), key
    for key in ("first_token_pkcs11", "first_token_keyvault"):
        if rows[key]["skipped"]:
            continue
        details = rows[key]["details"]["certauth"]
        # One token POST per first token; with the vault, the key proof and the assertion are
        # its two sign requests; a cached token asks neither.
        assert details["requests_to_token_endpoint"]["max"] == 1, key
        vault = 2 if key.endswith("keyvault") else 0
        assert details["requests_to_vault"]["max"] == vault, key
        assert details["cached_get_token_us"] > 0, key
