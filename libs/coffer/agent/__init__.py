"""``coffer agent``: a local sidecar serving the AWS Secrets Manager Agent's HTTP interface from a
``coffer.client.cache.SecretCache``, so applications written for AWS's agent work unchanged and see
rotations as soon as the change stream reports them.

    agent = await start_agent(config, client, token)      # in-process (a bench, a test): port from config
    ...
    await agent.close()
"""

from __future__ import annotations

from coffer.agent.config import AgentConfig, AgentConfigError, load_config, parse_config, read_ssrf_token
from coffer.agent.run import cache_config, run_agent, start_agent
from coffer.agent.server import Agent, is_loopback_peer, render

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentConfigError",
    "cache_config",
    "is_loopback_peer",
    "load_config",
    "parse_config",
    "read_ssrf_token",
    "render",
    "run_agent",
    "start_agent",
]
