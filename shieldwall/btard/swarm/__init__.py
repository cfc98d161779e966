"""BTARD in the open: a peer-to-peer swarm on hivemind (optional extra ``swarm``).

:class:`~.transport.HivemindTransport` carries the protocol's phases over libp2p;
:class:`~.node.SwarmNode` runs one peer: per-step membership through the DHT, joining mid-run
with an agreed-state download, metrics. ``shieldwall peer CONFIG --listen …`` /
``--initial-peers …`` starts one. Import :mod:`.node` / :mod:`.transport` directly (they need
``hivemind``).
"""
