"""``make run``: one whole Coffer deployment on this machine, supervised from the terminal.

``python -m coffer.devrun`` prepares ``COFFER_HOME`` (default ``./.coffer``: dev PKI, KMS root key, an
admin credential), starts embedded PostgreSQL and Redis unless ``COFFER_DATABASE_URL`` / ``COFFER_REDIS_URL``
are set, runs kms → store → gateway → rotation as four OS processes (``python -m coffer.<svc>``, configured
only through COFFER_* environment variables), waits until each answers SERVING on the standard gRPC health
service, writes the CLI profile and waits. A service that exits is restarted with back-off (in start order,
up again once SERVING; its restarts kept in ``COFFER_HOME/run/supervisor.json`` for ``coffer status``); only a
crash loop (five exits of one service within a minute, by default) stops the deployment. Ctrl-C or SIGTERM
stops the services (SIGTERM, then SIGKILL after a timeout), then Redis and PostgreSQL. ``--stop``
(``make stop``) stops a running supervisor and anything a killed one left behind.

``--regions 2`` (``make run REGIONS=2``) starts two such deployments side by side, regions ``local-1`` (in
``COFFER_HOME``, ports 7443-7446) and ``local-2`` (in ``COFFER_HOME/regions/local-2``, ports 7453-7456), each
with its own PKI, root key, PostgreSQL and Redis, configured as each other's replication peers
(``COFFER_PEERS``: the other region's store endpoint and CA). The profile then lists both regions.

The modules: :mod:`~coffer.devrun.config` (the COFFER_* environment of each service, regions, peers),
:mod:`~coffer.devrun.processes` (service processes, health waits, log tails, leftovers of a killed
supervisor), :mod:`~coffer.devrun.deployment` (:class:`Deployment`, :class:`MultiRegion`: PKI, root key,
credentials, databases, profile), :mod:`~coffer.devrun.healing` (restart policy, crash loops, the state
file) and :mod:`~coffer.devrun.cli` (the entry point). The end-to-end tests drive
the same classes. This is a blocking process supervisor (subprocesses, sleeps), not a service: it never runs
inside an event loop.
"""

from coffer.devrun.cli import main
from coffer.devrun.config import (
    connect_address,
    peers_json,
    region_envs,
    region_name,
    service_env,
    settings_env,
    with_database,
    with_peers,
)
from coffer.devrun.deployment import Deployment, DeploymentInfo, MultiRegion
from coffer.devrun.processes import DeploymentError, ServiceProcess, stop_all, tail

__all__ = [
    "Deployment",
    "DeploymentError",
    "DeploymentInfo",
    "MultiRegion",
    "ServiceProcess",
    "connect_address",
    "main",
    "peers_json",
    "region_envs",
    "region_name",
    "service_env",
    "settings_env",
    "stop_all",
    "tail",
    "with_database",
    "with_peers",
]
