"""``make run``: one whole Coffer deployment on this machine, supervised from the terminal.

The entry point of ``python -m coffer.devrun``: argument parsing, signal handling, the banner, and the wait
until Ctrl-C, SIGTERM or a service in a crash loop (a service that exits is restarted:
:mod:`~coffer.devrun.healing`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from coffer.devrun.config import (
    MAX_REGIONS,
    MAX_REPLICAS,
    connect_address,
    console_url,
    region_envs,
    replica_index,
    service_of,
    with_aws_endpoint,
)
from coffer.devrun.deployment import Deployment, MultiRegion, print_line
from coffer.devrun.healing import Healer, RestartPolicy
from coffer.devrun.processes import DeploymentError, stop_all
from coffer.settings import Settings


def _cli_command(deployment: Deployment) -> str:
    coffer_cmd = Path(deployment.python).parent / "coffer"
    return str(coffer_cmd) if coffer_cmd.exists() else f"{deployment.python} -m coffer.cli.main"


def _service_lines(deployment: Deployment, indent: str) -> Iterator[str]:
    """One line per service instance (every replica under REPLICAS=n), then the AWS endpoint(s) and the web
    console(s), one per gateway."""
    for name in deployment.instances:
        kind = "public, TLS + signed requests" if service_of(name) == "gateway" else "internal, mTLS"
        yield f"{indent}{name:<10} {connect_address(deployment.instance_addr(name)):<22} {kind}"
    gateways = [name for name in deployment.instances if service_of(name) == "gateway"]
    what = "the gateway's" if len(gateways) == 1 else "one per gateway"
    if deployment.settings.aws_addr:
        urls = " ".join(f"https://{connect_address(deployment.aws_addr_of(g))}" for g in gateways)
        yield f"{indent}AWS endpoint: {urls} (AWS JSON 1.1 + STS query, SigV4; {what})"
    if deployment.settings.console_addr:
        urls = " ".join(f"https://{connect_address(deployment.console_addr_of(g))}/" for g in gateways)
        yield f"{indent}Web console: {urls} (sign in with an access key pair; {what})"


def _banner(deployment: Deployment, *, wrote_user_profile: bool) -> Iterator[str]:
    s = deployment.settings
    cli = _cli_command(deployment)
    yield ""
    yield f"Coffer is running (region {s.region}, account {s.account_id}). Ctrl-C stops everything."
    yield from _service_lines(deployment, "  ")
    yield f"  logs      {deployment.log_dir}/<service>.log"
    for index in range(deployment.replicas):
        yield "  metrics   " + " ".join(
            f"{name} {deployment.metrics_url(name)}"
            for name in deployment.instances
            if replica_index(name) == index
        )
    yield ""
    yield f"  endpoint  {deployment.endpoint}"
    yield f"  CA file   {deployment.ca_file}"
    where = f"{deployment.profile_path}" + (f" and {deployment.user_profile}" if wrote_user_profile else "")
    yield f"The profile is written ({where}), so the CLI needs no flags; try:"
    yield f"  {cli} status"
    yield f"  {cli} secretsmanager create-secret --name demo/hello --secret-string 'hi there'"
    yield f"  {cli} secretsmanager get-secret-value --secret-id demo/hello"
    yield (
        "Or, for other clients (the admin's access key is the profile's access_key_id / secret_access_key; "
        "the secret is never printed):"
    )
    yield f"  export COFFER_PROFILE={deployment.profile_path}"
    yield f"  export COFFER_ENDPOINT={deployment.endpoint} COFFER_CA_FILE={deployment.ca_file}"
    if s.aws_addr:
        yield "AWS's own clients (boto3, the AWS CLI) reach the AWS endpoint with the admin's key:"
        yield f'  eval "$({cli} aws-env)"; aws secretsmanager list-secrets'
    console = console_url(s)
    if console:
        yield (
            f"The web console is at {console} (its certificate is signed by the CA file above: trust it in "
            "the browser, or accept the warning); sign in with the profile's access_key_id and "
            "secret_access_key."
        )
    yield ""


def _multi_banner(regions: MultiRegion, *, wrote_user_profile: bool) -> Iterator[str]:
    primary = regions.primary
    cli = _cli_command(primary)
    names = [d.settings.region for d in regions.deployments]
    yield ""
    yield (
        f"Coffer is running in {len(names)} regions ({', '.join(names)}; account "
        f"{primary.settings.account_id}), peers of each other. Ctrl-C stops everything."
    )
    for deployment in regions.deployments:
        yield f"  {deployment.settings.region}: home {deployment.home}"
        yield from _service_lines(deployment, "    ")
    where = f"{regions.profile_path}" + (f" and {regions.user_profile}" if wrote_user_profile else "")
    yield ""
    yield f"The profile lists every region ({where}); --region picks one (default {names[0]}):"
    yield f"  {cli} status"
    yield (
        f"  {cli} secretsmanager create-secret --name demo/hello --secret-string 'hi there' "
        f"--add-replica-regions Region={names[1]}"
    )
    yield f"  {cli} secretsmanager get-secret-value --secret-id demo/hello --region {names[1]}"
    if primary.settings.aws_addr:
        yield f'AWS clients: eval "$({cli} aws-env --region {names[1]})"; aws secretsmanager list-secrets'
    yield ""


class _StopRequested(BaseException):
    """Raised by the signal handler while starting (so start-up is abandoned and cleaned up)."""


def _healers(target: Deployment | MultiRegion, policy: RestartPolicy) -> list[Healer]:
    if isinstance(target, MultiRegion):
        return [Healer(d, policy, label=d.settings.region) for d in target.deployments]
    return [Healer(target, policy)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coffer.devrun", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--regions", type=int, default=1, help="number of regions local-1..local-N (default 1)"
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help=f"processes of every service (default 1, at most {MAX_REPLICAS}); replica k: ports +1000*(k-1)",
    )
    parser.add_argument("--stop", action="store_true", help="stop a running (or killed) `make run` and exit")
    parser.add_argument(
        "--no-user-profile", action="store_true", help="do not write ~/.config/coffer/profile.json"
    )
    args = parser.parse_args(argv)
    environ = with_aws_endpoint(os.environ)
    settings = Settings.from_env(environ)
    try:
        policy = RestartPolicy.from_env(os.environ)
    except ValueError as exc:
        print(f"coffer: {exc}", file=sys.stderr)
        return 2
    # pgserver's platformdirs falls back to /tmp for its lock file when XDG_RUNTIME_DIR is unset: harmless.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    echo = print_line

    if args.stop:
        return stop_all(settings.home, echo=echo)
    if not 1 <= args.regions <= MAX_REGIONS:
        print(f"--regions {args.regions}: give a number from 1 to {MAX_REGIONS}.", file=sys.stderr)
        return 2
    if not 1 <= args.replicas <= MAX_REPLICAS:
        print(f"--replicas {args.replicas}: give a number from 1 to {MAX_REPLICAS}.", file=sys.stderr)
        return 2

    user_profile = None if args.no_user_profile else Path.home() / ".config" / "coffer" / "profile.json"
    target: Deployment | MultiRegion
    if args.regions == 1:
        target = Deployment(settings, user_profile=user_profile, echo=echo, replicas=args.replicas)
    else:
        target = MultiRegion.from_envs(
            region_envs(environ, args.regions),
            user_profile=user_profile,
            echo=echo,
            replicas=args.replicas,
        )
        for deployment in target.deployments[1:]:
            deployment.create_database = bool(deployment.settings.database_url)
    state: dict[str, Any] = {"starting": True, "stopping": False, "signal": None}

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if state["stopping"]:
            return
        state["signal"] = signum
        if state["starting"]:
            raise _StopRequested

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    rc = 0
    healers: list[Healer] = []
    try:
        target.start(stop_on_failure=False)
        state["starting"] = False
        if isinstance(target, MultiRegion):
            banner = _multi_banner(target, wrote_user_profile=user_profile is not None)
        else:
            banner = _banner(target, wrote_user_profile=user_profile is not None)
        for line in banner:
            echo(line)
        # A service that exits is restarted (with back-off, in start order, up again once SERVING); a crash
        # loop raises CrashLoop (a DeploymentError). Nothing is restarted once a signal asked us to stop.
        healers = _healers(target, policy)
        while state["signal"] is None:
            for healer in healers:
                healer.step()
                if state["signal"] is not None:
                    break
            time.sleep(0.2)
    except _StopRequested:
        pass
    except DeploymentError as exc:
        echo(f"coffer: {exc}")
        rc = 1
    except Exception as exc:  # PostgreSQL/Redis/PKI trouble: say what failed, then stop what did start
        echo(f"coffer: could not start: {type(exc).__name__}: {exc}")
        rc = 1
    finally:
        state["stopping"] = True
        if state["signal"] is not None:
            echo(f"\n{signal.Signals(state['signal']).name} received: stopping")
        codes = target.stop()
        for healer in healers:
            healer.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    failed = {name: code for name, code in codes.items() if code != 0}
    if failed:
        echo("services that did not exit cleanly: " + ", ".join(f"{n} ({c})" for n, c in failed.items()))
        rc = rc or 1
    if rc == 0:
        echo("Coffer stopped.")
    return rc
