"""The networked (cross-organisation) runtime: a gRPC server and silo clients.

``shieldwall server CONFIG`` runs the usual training loop with :class:`GrpcServerRuntime`
(registered as runtime ``grpc``); ``shieldwall client CONFIG --rank K`` runs
:class:`GrpcClientRuntime` for client ``K``, optionally as a silo of DDP trainers. Modules:
:mod:`.wire` (framed binary messages), :mod:`.settings` (``comm_args``), :mod:`.hub` (the
server's protocol rules), :mod:`.rows` (reading an uploaded row), :mod:`.server`,
:mod:`.client`, :mod:`.silo`, :mod:`.node` (client process drivers) and :mod:`.certs` (test
certificates). See ``docs/networked.md``.
"""

from shieldwall.runtime.net.client import ClientRefused, GrpcClientRuntime
from shieldwall.runtime.net.server import GrpcServerRuntime
from shieldwall.runtime.net.settings import NetSettings, network_view

__all__ = [
    "ClientRefused",
    "GrpcClientRuntime",
    "GrpcServerRuntime",
    "NetSettings",
    "network_view",
]
