"""A local Microsoft Entra ID tenant that checks client assertions the way Entra ID does.

``Emulator`` serves discovery documents, JWKS and token endpoints over real HTTP (https with
``tls=True``) and answers wrong requests with the AADSTS code Entra ID would send. See
:mod:`certauth.emulator.checks` for the rules and docs/emulator.md for use.
"""

from __future__ import annotations

from certauth.emulator.checks import EntraError, Policy
from certauth.emulator.clock import Clock
from certauth.emulator.config import EmulatorConfig, load_config
from certauth.emulator.registry import DEFAULT_TENANT_ID
from certauth.emulator.server import ServerLimits
from certauth.emulator.service import Emulator
from certauth.emulator.token_endpoint import RequestHold

__all__ = [
    "DEFAULT_TENANT_ID",
    "Clock",
    "Emulator",
    "EmulatorConfig",
    "EntraError",
    "Policy",
    "RequestHold",
    "ServerLimits",
    "load_config",
]
