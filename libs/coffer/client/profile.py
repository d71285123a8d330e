"""Where the SDK and the CLI find their endpoint, CA file and access key.

Precedence: explicit arguments (CLI flags) > ``COFFER_ENDPOINT`` / ``COFFER_CA_FILE`` / ``COFFER_REGION`` and
the access key ``COFFER_ACCESS_KEY_ID`` + ``COFFER_SECRET_ACCESS_KEY`` (+ ``COFFER_SESSION_TOKEN``) > the
profile JSON written by ``make run``. The access key is taken whole from one place: the environment's when
``COFFER_ACCESS_KEY_ID`` is set, else the profile's. The profile is ``$COFFER_PROFILE`` when set
(then it must exist), else the first of ``./.coffer/profile.json`` and ``~/.config/coffer/profile.json``.

Profile keys: ``endpoint``, ``ca_file``, ``access_key_id``, ``secret_access_key`` (the profile is written
0600), ``session_token``, ``region``, ``services`` (``{"gateway": "host:port",
"store": ..., "kms": ..., "rotation": ...}``), ``operator_cert``, ``operator_key``, ``aws_endpoint_url`` (the
gateway's AWS-protocol endpoint, ``https://host:port``, for boto3 and the AWS CLI: ``coffer aws-env``),
``max_attempts`` and ``retry_mode`` (client retries, like AWS's ``AWS_MAX_ATTEMPTS`` / ``AWS_RETRY_MODE``:
``COFFER_MAX_ATTEMPTS`` / ``COFFER_RETRY_MODE`` win over them; ``coffer.client.retry``). Relative file paths
are relative to the profile's directory.

Regions: a profile written by ``make run REGIONS=2`` also has ``"regions": {"local-1": {...}, "local-2":
{...}}``, each entry with the same keys as above (``region`` excepted); the top-level keys describe the
default region (``region``). A region (``--region``, ``COFFER_REGION``, else the profile's ``region``, else
``local-1``) selects its entry's endpoint, CA file, access key and services; an explicit endpoint (argument or
``COFFER_ENDPOINT``) bypasses the selection. Naming a region the profile does not have is a
``ConfigurationError``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from coffer.client.credentials import Credentials
from coffer.client.retry import validate_max_attempts, validate_retry_mode

PROFILE_ENV = "COFFER_PROFILE"
ENDPOINT_ENV = "COFFER_ENDPOINT"
CA_FILE_ENV = "COFFER_CA_FILE"
ACCESS_KEY_ID_ENV = "COFFER_ACCESS_KEY_ID"
SECRET_ACCESS_KEY_ENV = "COFFER_SECRET_ACCESS_KEY"
SESSION_TOKEN_ENV = "COFFER_SESSION_TOKEN"
REGION_ENV = "COFFER_REGION"
MAX_ATTEMPTS_ENV = "COFFER_MAX_ATTEMPTS"
RETRY_MODE_ENV = "COFFER_RETRY_MODE"
DEFAULT_REGION = "local-1"


class ConfigurationError(ValueError):
    """The endpoint, CA file or access key cannot be determined, or the profile is unreadable."""


@dataclass(frozen=True, slots=True)
class Profile:
    endpoint: str | None = None
    ca_file: Path | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str | None = None
    services: Mapping[str, str] = field(default_factory=dict)
    #: Service name -> its Prometheus metrics URL (``metrics`` in the JSON, written by ``make run``).
    metrics: Mapping[str, str] = field(default_factory=dict)
    operator_cert: Path | None = None
    operator_key: Path | None = None
    #: Client retries (``coffer.client.retry``): attempts in all per call, and the retry mode.
    max_attempts: int | None = None
    retry_mode: str | None = None
    #: The gateway's AWS-protocol endpoint (``https://127.0.0.1:7447``), when the deployment serves it.
    aws_endpoint_url: str | None = None
    path: Path | None = None
    #: Region name -> that region's own profile (``regions`` in the JSON); empty for a one-region profile.
    regions: Mapping[str, Profile] = field(default_factory=dict)

    @property
    def region_names(self) -> list[str]:
        """The regions this profile can reach (its own region when it has no ``regions`` map)."""
        if self.regions:
            return list(self.regions)
        return [self.region] if self.region else []

    def select_region(self, region: str) -> Profile:
        """This profile as seen from ``region``: that region's entry, falling back to the top-level keys for
        what the entry leaves out. A one-region profile selects only its own region (or any, when it names
        none)."""
        if not self.regions:
            if self.region is None or self.region == region:
                return self
            raise ConfigurationError(
                f"Region {region} is not in the profile {self.path} (it has only {self.region}; "
                "start more regions with `make run REGIONS=2`, or pass --endpoint)."
            )
        entry = self.regions.get(region)
        if entry is None:
            known = ", ".join(self.regions)
            raise ConfigurationError(f"Region {region} is not in the profile {self.path} (it has: {known}).")
        return Profile(
            endpoint=entry.endpoint or (self.endpoint if region == self.region else None),
            ca_file=entry.ca_file or (self.ca_file if region == self.region else None),
            access_key_id=entry.access_key_id or (self.access_key_id if region == self.region else None),
            secret_access_key=entry.secret_access_key
            or (self.secret_access_key if region == self.region else None),
            session_token=entry.session_token or (self.session_token if region == self.region else None),
            region=region,
            services=dict(entry.services) if entry.services else {},
            metrics=dict(entry.metrics) if entry.metrics else {},
            operator_cert=entry.operator_cert or self.operator_cert,
            operator_key=entry.operator_key or self.operator_key,
            aws_endpoint_url=entry.aws_endpoint_url
            or (self.aws_endpoint_url if region == self.region else None),
            max_attempts=self.max_attempts,
            retry_mode=self.retry_mode,
            path=self.path,
            regions=self.regions,
        )


@dataclass(frozen=True, slots=True)
class Connection:
    """Everything a client needs to reach the gateway."""

    endpoint: str
    ca_file: Path
    credentials: Credentials | None
    region: str | None = None
    #: Client retries: None = the SDK's default (3 attempts, standard mode).
    max_attempts: int | None = None
    retry_mode: str | None = None


def profile_candidates(env: Mapping[str, str] | None = None, *, cwd: Path | None = None) -> list[Path]:
    e = os.environ if env is None else env
    explicit = e.get(PROFILE_ENV)
    if explicit:
        return [Path(explicit).expanduser()]
    home = Path(e.get("HOME") or Path.home())
    return [(cwd or Path.cwd()) / ".coffer" / "profile.json", home / ".config" / "coffer" / "profile.json"]


def _opt_str(doc: Mapping[str, object], key: str, path: Path) -> str | None:
    value = doc.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"{path}: {key!r} must be a string")
    return value


def _opt_path(doc: Mapping[str, object], key: str, path: Path) -> Path | None:
    value = _opt_str(doc, key, path)
    if value is None:
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() else path.parent / p


def _max_attempts(value: object, where: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return validate_max_attempts(value)
    except ValueError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None


def _retry_mode(value: object, where: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"{where}: retry_mode must be a string")
    try:
        return validate_retry_mode(value)
    except ValueError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None


def _services(doc: Mapping[str, object], path: Path, key: str = "services") -> dict[str, str]:
    services = doc.get(key) or {}
    if not isinstance(services, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in services.items()
    ):
        what = '"host:port" strings' if key == "services" else "URLs"
        raise ConfigurationError(f'{path}: "{key}" must map service names to {what}')
    return dict(services)


def _regions(doc: Mapping[str, object], path: Path) -> dict[str, Profile]:
    regions = doc.get("regions") or {}
    if not isinstance(regions, dict) or not all(
        isinstance(k, str) and isinstance(v, dict) for k, v in regions.items()
    ):
        raise ConfigurationError(f'{path}: "regions" must map region names to objects')
    return {
        name: Profile(
            endpoint=_opt_str(entry, "endpoint", path),
            ca_file=_opt_path(entry, "ca_file", path),
            access_key_id=_opt_str(entry, "access_key_id", path),
            secret_access_key=_opt_str(entry, "secret_access_key", path),
            session_token=_opt_str(entry, "session_token", path),
            region=name,
            services=_services(entry, path),
            metrics=_services(entry, path, "metrics"),
            operator_cert=_opt_path(entry, "operator_cert", path),
            operator_key=_opt_path(entry, "operator_key", path),
            aws_endpoint_url=_opt_str(entry, "aws_endpoint_url", path),
            path=path,
        )
        for name, entry in regions.items()
    }


def read_profile(path: Path) -> Profile:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"Profile {path} does not exist (is `make run` running?).") from None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"Profile {path} is unreadable: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigurationError(f"Profile {path} must hold a JSON object.")
    return Profile(
        endpoint=_opt_str(doc, "endpoint", path),
        ca_file=_opt_path(doc, "ca_file", path),
        access_key_id=_opt_str(doc, "access_key_id", path),
        secret_access_key=_opt_str(doc, "secret_access_key", path),
        session_token=_opt_str(doc, "session_token", path),
        region=_opt_str(doc, "region", path),
        services=_services(doc, path),
        metrics=_services(doc, path, "metrics"),
        operator_cert=_opt_path(doc, "operator_cert", path),
        operator_key=_opt_path(doc, "operator_key", path),
        max_attempts=_max_attempts(doc.get("max_attempts"), str(path)),
        retry_mode=_retry_mode(doc.get("retry_mode"), str(path)),
        aws_endpoint_url=_opt_str(doc, "aws_endpoint_url", path),
        path=path,
        regions=_regions(doc, path),
    )


def load_profile(path: Path | None = None, *, env: Mapping[str, str] | None = None) -> Profile:
    """The profile at ``path``, else at ``$COFFER_PROFILE``, else the first existing default location, else
    an empty profile."""
    if path is not None:
        return read_profile(path)
    e = os.environ if env is None else env
    candidates = profile_candidates(e)
    if e.get(PROFILE_ENV):
        return read_profile(candidates[0])
    for candidate in candidates:
        if candidate.is_file():
            return read_profile(candidate)
    return Profile()


def _env_credentials(e: Mapping[str, str]) -> Credentials | None:
    akid = e.get(ACCESS_KEY_ID_ENV)
    if not akid:
        return None
    secret = e.get(SECRET_ACCESS_KEY_ENV)
    if not secret:
        raise ConfigurationError(f"{ACCESS_KEY_ID_ENV} is set but {SECRET_ACCESS_KEY_ENV} is not.")
    return Credentials(akid, secret, e.get(SESSION_TOKEN_ENV) or None)


def _profile_credentials(prof: Profile) -> Credentials | None:
    if not prof.access_key_id or not prof.secret_access_key:
        return None
    return Credentials(prof.access_key_id, prof.secret_access_key, prof.session_token)


def resolve_connection(
    *,
    endpoint: str | None = None,
    ca_file: str | Path | None = None,
    credentials: Credentials | None = None,
    region: str | None = None,
    profile: Profile | None = None,
    env: Mapping[str, str] | None = None,
) -> Connection:
    """Merge explicit values, environment variables and the profile (in that order of precedence). The
    region (argument, ``COFFER_REGION``, the profile's default, ``local-1``) selects the profile's entry for
    that region unless the endpoint is given explicitly."""
    e = os.environ if env is None else env
    prof = profile if profile is not None else load_profile(env=e)
    explicit_endpoint = endpoint or e.get(ENDPOINT_ENV)
    final_region = region or e.get(REGION_ENV) or prof.region or (DEFAULT_REGION if prof.regions else None)
    if final_region and not explicit_endpoint:
        prof = prof.select_region(final_region)
    final_endpoint = explicit_endpoint or prof.endpoint
    final_ca = ca_file or e.get(CA_FILE_ENV) or prof.ca_file
    final_credentials = credentials or _env_credentials(e) or _profile_credentials(prof)
    if not final_endpoint:
        raise ConfigurationError(
            "No endpoint: pass --endpoint, set COFFER_ENDPOINT, or run `make run` (it writes a profile)."
        )
    if not final_ca:
        raise ConfigurationError(
            "No CA file to verify the gateway with: pass --ca-file, set COFFER_CA_FILE, or use a profile."
        )
    return Connection(
        endpoint=final_endpoint,
        ca_file=Path(final_ca),
        credentials=final_credentials,
        region=final_region,
        max_attempts=_max_attempts(e.get(MAX_ATTEMPTS_ENV), MAX_ATTEMPTS_ENV) or prof.max_attempts,
        retry_mode=_retry_mode(e.get(RETRY_MODE_ENV), RETRY_MODE_ENV) or prof.retry_mode,
    )
