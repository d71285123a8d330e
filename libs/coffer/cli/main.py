"""The ``coffer`` command, shaped like the AWS CLI.

    coffer secretsmanager create-secret --name db/prod --secret-string '{"user": "app"}'
    coffer secretsmanager get-secret-value --secret-id db/prod --version-stage AWSPREVIOUS
    coffer kms create-key --description "payments"
    coffer iam create-user --user-name alice --tags Key=team,Value=payments
    coffer iam put-user-policy --user-name alice --policy-name read --policy-document file://read.json
    coffer sts assume-role --role-arn arn:aws:iam::000000000000:role/app --role-session-name s1
    coffer organizations create-account --account-name team-a --email team-a@example.com
    coffer status
    eval "$(coffer aws-env)"     # the AWS CLI / boto3 against the AWS-protocol endpoint, as the admin
    coffer agent --config agent.toml
    coffer rotation history --secret-id db/prod
    coffer usage get --month 2026-03
    coffer operator init --key-shares 5 --key-threshold 3
    coffer operator unseal 'academic acid ...'
    coffer operator rotate-root --wait
    coffer operator migrate-seal --to shamir --key-shares 5 --key-threshold 3 --wait
    coffer admin backup --to /backups/2026-12-02 --include-root-key --passphrase-file pass.txt
    coffer admin verify-backup --from /backups/2026-12-02 --passphrase-file pass.txt
    coffer admin restore --from /backups/2026-12-02 --passphrase-file pass.txt

Every operation of ``coffer.api.secrets.v1.SecretsManagerService``, ``coffer.api.kms.v1.
KeyManagementService`` and ``coffer.api.iam.v1`` (``iam``, ``sts``, ``organizations``) is a sub-command, built
from the proto descriptors (``coffer.cli.shapes``). Output is the AWS CLI's JSON. Exit codes follow the AWS
CLI: 0 ok, 252 bad command line, 253 missing or bad configuration, 254 the service returned an error (``An
error occurred (<Code>) when calling the <Op> operation: <message>`` on stderr), 255 anything else (e.g. the
gateway cannot be reached); ``coffer status`` exits 1 when a service is not serving. Global options
(``--endpoint``, ``--ca-file``, ``--region``, ``--profile``) go before or after the command; the access key
comes from ``COFFER_ACCESS_KEY_ID`` / ``COFFER_SECRET_ACCESS_KEY`` (/ ``COFFER_SESSION_TOKEN``), else the
profile. ``--region local-2`` selects that region's endpoint, CA file and access key from the profile (``make
run REGIONS=2`` writes both); ``coffer status`` checks every region of the profile unless ``--region`` names
one. Failed calls are retried like the AWS CLI's standard mode (``COFFER_MAX_ATTEMPTS``, default 3, or the
profile's ``max_attempts``; ``coffer.client.retry``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from google.protobuf.descriptor import ServiceDescriptor

from coffer.cli import aws_env, shapes
from coffer.cli.admin_commands import add_admin_commands
from coffer.cli.audit import add_audit_commands
from coffer.cli.status import ServiceHealth, check_all, supervisor_restarts
from coffer.client import _ops
from coffer.client.profile import ConfigurationError, Connection, Profile, load_profile, resolve_connection
from coffer.client.sync import CofferClient
from coffer.core.errors import CofferError

EXIT_OK = 0
EXIT_NOT_SERVING = 1
EXIT_USAGE = 252
EXIT_CONFIG = 253
EXIT_SERVICE_ERROR = 254
EXIT_OTHER = 255

SERVICES: dict[str, ServiceDescriptor] = {
    "secretsmanager": _ops.SECRETS,
    "kms": _ops.KMS,
    "iam": _ops.IAM,
    "sts": _ops.STS,
    "organizations": _ops.ORGANIZATIONS,
}

Handler = Callable[[argparse.Namespace, TextIO, TextIO], int]


class _UsageExit(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageExit(f"{self.format_usage()}{self.prog}: error: {message}")


def _global_options(*, suppress: bool) -> _Parser:
    """The options every command takes. On sub-commands their default is SUPPRESS, so a value given before
    the command is not overwritten by an absent one after it."""
    default = argparse.SUPPRESS if suppress else None
    p = _Parser(add_help=False)
    g = p.add_argument_group("global options")
    g.add_argument("--endpoint", "--endpoint-url", dest="endpoint", default=default, help="gateway host:port")
    g.add_argument("--ca-file", dest="ca_file", default=default, help="CA certificate to verify the gateway")
    g.add_argument(
        "--region",
        dest="region",
        default=default,
        help="region whose endpoint/CA/access key the profile gives (default: the profile's, local-1)",
    )
    g.add_argument("--profile", dest="profile", default=default, help="path of a profile JSON")
    g.add_argument("--output", dest="output", choices=["json"], default=default, help="output format")
    return p


def _profile(args: argparse.Namespace) -> Profile:
    return load_profile(Path(args.profile)) if args.profile else load_profile()


def _connection(args: argparse.Namespace, profile: Profile | None = None) -> Connection:
    return resolve_connection(
        endpoint=args.endpoint,
        ca_file=args.ca_file,
        region=args.region,
        profile=profile if profile is not None else _profile(args),
    )


def _client(args: argparse.Namespace) -> CofferClient:
    """A client for the connection the arguments and profile select; an unreadable CA file is a
    ConfigurationError."""
    conn = _connection(args)
    try:
        return CofferClient(
            conn.endpoint,
            conn.ca_file,
            conn.credentials,
            region=conn.region,
            max_attempts=conn.max_attempts,
            retry_mode=conn.retry_mode,
        )
    except OSError as exc:
        raise ConfigurationError(
            f"Unable to read the CA file {conn.ca_file}: {exc.strerror or exc}"
        ) from None


def _operation_handler(service: str, operation: str) -> Handler:
    descriptor = SERVICES[service].methods_by_name[operation]

    def handle(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
        request = shapes.request_from_args(descriptor.input_type, args)
        client = _client(args)
        if descriptor.server_streaming:
            return _watch(client, request, out)
        with client:
            target = {
                "secretsmanager": client,
                "kms": client.kms,
                "iam": client.iam,
                "sts": client.sts,
                "organizations": client.organizations,
            }[service]
            response = target.call(operation, request)
        body = shapes.to_aws(response)
        if body:
            print(json.dumps(body, indent=4, ensure_ascii=False), file=out)
        return EXIT_OK

    return handle


def _watch(client: CofferClient, request: Any, out: TextIO) -> int:
    """``coffer secretsmanager watch-secrets [--name-prefix P] [--secret-ids ID ...] [--resume-token T]``:
    one JSON line per event, flushed as it comes, until interrupted (the stream is not retried: run it again
    with the last ResumeToken)."""
    with client:
        for event in client.watch_secrets(
            resume_token=request.resume_token or None,
            secret_ids=list(request.secret_ids),
            name_prefix=request.name_prefix if request.HasField("name_prefix") else None,
        ):
            print(json.dumps(shapes.to_aws(event), ensure_ascii=False), file=out, flush=True)
    return EXIT_OK


def _rotation_history(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``coffer rotation history --secret-id X``: every rotation attempt of the secret (ListRotationAttempts),
    newest first, with its steps, times, outcome and error; follows NextToken unless --max-items is given."""
    from coffer.api.secrets.v1 import secrets_pb2

    client = _client(args)
    attempts: list[object] = []
    body: dict[str, object] = {}
    next_token: str | None = None
    with client:
        while True:
            request = secrets_pb2.ListRotationAttemptsRequest(secret_id=args.secret_id)
            if args.max_items is not None:
                request.max_results = args.max_items
            if next_token is not None:
                request.next_token = next_token
            response = client.call("ListRotationAttempts", request)
            page = shapes.to_aws(response)
            body.setdefault("ARN", page.get("ARN"))
            body.setdefault("Name", page.get("Name"))
            attempts.extend(page.get("Attempts", []))
            next_token = page.get("NextToken")
            if not next_token or args.max_items is not None:
                break
    body["Attempts"] = attempts
    if next_token:
        body["NextToken"] = next_token
    print(json.dumps(body, indent=4, ensure_ascii=False), file=out)
    return EXIT_OK


def _usage_get(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``coffer usage get --month YYYY-MM``: the caller's account's API calls per operation and SecretMonths
    in the month (UsageService/GetUsage)."""
    client = _client(args)
    with client:
        response = client.usage.call("GetUsage", month=args.month)
    print(json.dumps(shapes.to_aws(response), indent=4, ensure_ascii=False), file=out)
    return EXIT_OK


def _operator_handler(operation: str) -> Handler:
    """``coffer operator init|unseal|seal|status``: the kms's seal (SealService, operators only). ``init``
    prints the unseal key shares once, as JSON; they are stored nowhere else."""

    def handle(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
        fields: dict[str, object] = {}
        if operation == "OperatorInit":
            fields = {"key_shares": args.key_shares, "key_threshold": args.key_threshold}
        elif operation == "OperatorUnseal":
            fields = {"share": args.share}
        elif operation == "OperatorRotateRoot":
            fields = {"wait": args.wait}
        elif operation == "OperatorMigrateSeal":
            fields = {
                "to_mode": args.to,
                "key_shares": args.key_shares or 0,
                "key_threshold": args.key_threshold or 0,
                "wait": args.wait,
            }
        client = _client(args)
        with client:
            response = client.operator.call(operation, **fields)
        print(json.dumps(shapes.to_aws(response), indent=4, ensure_ascii=False), file=out)
        return EXIT_OK

    return handle


def _agent(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``coffer agent [--config FILE]``: the local sidecar (``coffer.agent``) until SIGINT/SIGTERM. The
    configuration file and the SSRF token variable are checked before anything starts (exit 253 when
    unusable, as a configuration error)."""
    import asyncio

    from coffer.agent import AgentConfigError, load_config, read_ssrf_token
    from coffer.agent.run import configure_logging, run_agent
    from coffer.client.aio import AsyncCofferClient

    try:
        config = load_config(Path(args.config) if args.config else None)
        token = read_ssrf_token(config)
    except AgentConfigError as exc:
        print(f"coffer agent: {exc.message}", file=err)
        return EXIT_CONFIG
    if config.region and not args.region:
        args.region = config.region
    conn = _connection(args)
    configure_logging(config)

    def connect() -> AsyncCofferClient:
        return AsyncCofferClient(
            conn.endpoint,
            conn.ca_file,
            conn.credentials,
            region=conn.region,
            max_attempts=conn.max_attempts,
            retry_mode=conn.retry_mode,
        )

    return asyncio.run(run_agent(config, connect, token, err=err))


def _status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    profile = _profile(args)
    if profile.regions and not args.endpoint:
        names = [args.region] if args.region else list(profile.regions)
        checks = [(name, _region_services(args, profile.select_region(name))) for name in names]
    else:
        checks = [("", _region_services(args, profile))]
    results: list[tuple[str, ServiceHealth]] = []
    for region, (services, conn, region_profile) in checks:
        for health in check_all(
            services,
            ca_file=conn.ca_file,
            operator_cert=region_profile.operator_cert,
            operator_key=region_profile.operator_key,
            timeout=args.timeout,
            restarts=None if args.endpoint else supervisor_restarts(profile.path, region_profile.region),
        ):
            results.append((region, health))
    width = max(len(r.name) for _, r in results)
    region_width = max(len(region) for region, _ in results)
    for region, r in results:
        line = f"{r.name:<{width}}  {r.address:<21}  {r.status}"
        if r.restarts is not None:
            line += f"  restarts {r.restarts}"
        if region:
            line = f"{region:<{region_width}}  {line}"
        print(f"{line}  ({r.detail})" if r.detail else line, file=out)
    if not args.endpoint:  # what the serving services' metrics say: replication lag, the rotation queue
        from coffer.cli.status_metrics import metrics_lines  # prometheus' parser: only for status

        serving = {(region, r.name) for region, r in results if r.ok}
        for region, (_services, _conn, region_profile) in checks:
            urls = {name: url for name, url in region_profile.metrics.items() if (region, name) in serving}
            for line in metrics_lines(urls, timeout=args.timeout):
                print(f"{region:<{region_width}}  {line}" if region else line, file=out)
    failed = [(region, r) for region, r in results if not r.ok]
    if failed:
        listed = ", ".join(f"{region + ' ' if region else ''}{r.name} ({r.status})" for region, r in failed)
        print(f"Not serving: {listed}", file=err)
        return EXIT_NOT_SERVING
    return EXIT_OK


def _aws_env(args: argparse.Namespace, out: TextIO, _err: TextIO) -> int:
    return aws_env.run(args, _profile(args), out)


def _region_services(
    args: argparse.Namespace, profile: Profile
) -> tuple[dict[str, str], Connection, Profile]:
    """The services to check for one region of the profile (``profile`` already selected for it)."""
    services = dict(profile.services)
    if args.endpoint:
        services["gateway"] = args.endpoint
    conn = resolve_connection(
        endpoint=args.endpoint or services.get("gateway"),
        ca_file=args.ca_file,
        region=args.region,
        profile=profile,
    )
    services.setdefault("gateway", conn.endpoint)
    return services, conn, profile


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="coffer",
        description="Coffer: a self-hosted secrets manager that behaves like AWS Secrets Manager.",
        parents=[_global_options(suppress=False)],
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    leaf_parents = [_global_options(suppress=True)]

    for service_name, service in SERVICES.items():
        service_parser = commands.add_parser(service_name, help=f"{service.full_name} operations")
        operations = service_parser.add_subparsers(
            dest="operation", metavar="OPERATION", parser_class=_Parser
        )
        operations.required = True
        for method in service.methods:
            op_parser = operations.add_parser(
                shapes.command_name(method.name), parents=leaf_parents, help=method.name
            )
            shapes.add_request_arguments(op_parser, method.input_type)
            op_parser.set_defaults(handler=_operation_handler(service_name, method.name))

    agent = commands.add_parser(
        "agent",
        parents=leaf_parents,
        help="local sidecar serving the AWS Secrets Manager Agent's HTTP interface from a pushed cache",
    )
    agent.add_argument("--config", "-c", default=None, metavar="FILE", help="the agent's TOML configuration")
    agent.set_defaults(handler=_agent)

    status = commands.add_parser(
        "status", parents=leaf_parents, help="health of every service in the profile"
    )
    status.add_argument("--timeout", type=float, default=3.0, help="seconds per service (default 3)")
    status.set_defaults(handler=_status)

    aws = commands.add_parser(
        "aws-env",
        parents=leaf_parents,
        help="print the export lines that point the AWS CLI / boto3 at this deployment (eval them)",
    )
    aws.set_defaults(handler=_aws_env)

    rotation = commands.add_parser("rotation", help="rotation history (beyond AWS)")
    rotation_commands = rotation.add_subparsers(
        dest="rotation_command", metavar="ACTION", parser_class=_Parser
    )
    rotation_commands.required = True
    history = rotation_commands.add_parser(
        "history",
        parents=leaf_parents,
        help="every rotation attempt of a secret with its steps, times, outcome and error (JSON)",
    )
    history.add_argument("--secret-id", required=True, help="name or ARN of the secret")
    history.add_argument(
        "--max-items", type=int, default=None, help="at most this many attempts, newest first (default: all)"
    )
    history.set_defaults(handler=_rotation_history)

    usage = commands.add_parser("usage", help="metering: API calls and SecretMonths per month (beyond AWS)")
    usage_commands = usage.add_subparsers(dest="usage_command", metavar="ACTION", parser_class=_Parser)
    usage_commands.required = True
    usage_get = usage_commands.add_parser(
        "get", parents=leaf_parents, help="the caller's account's usage in a month (JSON)"
    )
    usage_get.add_argument("--month", required=True, metavar="YYYY-MM", help="calendar month (UTC)")
    usage_get.set_defaults(handler=_usage_get)
    add_audit_commands(commands, leaf_parents, _client)

    operator = commands.add_parser("operator", help="the kms's seal: init, unseal, seal, status (operators)")
    operator_commands = operator.add_subparsers(
        dest="operator_command", metavar="ACTION", parser_class=_Parser
    )
    operator_commands.required = True
    init = operator_commands.add_parser(
        "init",
        parents=leaf_parents,
        help="make the root key and print the unseal key shares once (JSON; COFFER_SEAL=shamir)",
    )
    init.add_argument("--key-shares", type=int, required=True, metavar="N", help="number of shares (1-16)")
    init.add_argument(
        "--key-threshold", type=int, required=True, metavar="K", help="shares needed to unseal (2-N)"
    )
    init.set_defaults(handler=_operator_handler("OperatorInit"))
    unseal = operator_commands.add_parser(
        "unseal", parents=leaf_parents, help="give one unseal key share (K of them unseal the kms)"
    )
    unseal.add_argument("share", help="one share: its words, quoted")
    unseal.set_defaults(handler=_operator_handler("OperatorUnseal"))
    seal = operator_commands.add_parser(
        "seal", parents=leaf_parents, help="drop the root key from the kms's memory"
    )
    seal.set_defaults(handler=_operator_handler("OperatorSeal"))
    seal_status = operator_commands.add_parser(
        "status", parents=leaf_parents, help="seal mode, sealed or not, unseal progress (k of K)"
    )
    seal_status.set_defaults(handler=_operator_handler("OperatorStatus"))
    rotate_root = operator_commands.add_parser(
        "rotate-root",
        parents=leaf_parents,
        help="new root key, every CMK's material rewrapped under it while serving, old root destroyed",
    )
    rotate_root.add_argument("--wait", action="store_true", help="answer when the rotation is done")
    rotate_root.set_defaults(handler=_operator_handler("OperatorRotateRoot"))
    migrate_seal = operator_commands.add_parser(
        "migrate-seal",
        parents=leaf_parents,
        help="move from the file seal to shamir or pkcs11 (prints the unseal key shares once for shamir)",
    )
    migrate_seal.add_argument("--to", required=True, choices=("shamir", "pkcs11"), help="the new seal mode")
    migrate_seal.add_argument("--key-shares", type=int, metavar="N", help="shamir: number of shares")
    migrate_seal.add_argument("--key-threshold", type=int, metavar="K", help="shamir: shares needed")
    migrate_seal.add_argument("--wait", action="store_true", help="answer when the migration is done")
    migrate_seal.set_defaults(handler=_operator_handler("OperatorMigrateSeal"))
    add_admin_commands(commands, _Parser)

    return parser


@contextlib.contextmanager
def _redirected(out: TextIO, err: TextIO) -> Iterator[None]:
    """argparse prints help and usage to sys.stdout/sys.stderr itself."""
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield


def service_error(exc: CofferError) -> str:
    """How the AWS CLI reports a service's error (``coffer: <error>`` when no operation is known)."""
    if exc.operation:
        return f"An error occurred ({exc.code}) when calling the {exc.operation} operation: {exc.message}"
    return f"coffer: {exc}"


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    parser = build_parser()
    try:
        with _redirected(out, err):
            args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except _UsageExit as exc:
        print(exc.message, file=err)
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    handler: Handler = args.handler
    try:
        return handler(args, out, err)
    except shapes.UsageError as exc:
        print(f"coffer: error: {exc}", file=err)
        return EXIT_USAGE
    except ConfigurationError as exc:
        print(f"coffer: {exc}", file=err)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    except _ops.EndpointUnreachable as exc:
        print(exc.message, file=err)
        return EXIT_OTHER
    except CofferError as exc:
        print(service_error(exc), file=err)
        return EXIT_SERVICE_ERROR
    except (OSError, ValueError) as exc:
        print(f"coffer: {exc}", file=err)
        return EXIT_OTHER


if __name__ == "__main__":
    sys.exit(main())
