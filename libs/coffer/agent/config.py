"""``coffer agent``'s configuration: the AWS Secrets Manager Agent's TOML file, its keys, defaults and limits.

Unknown keys are refused, as AWS's agent does; numbers may be quoted (``http_port = "2773"``). AWS's keys that
name AWS credentials (``credentials_file_path``) are refused with a message saying what to use instead: the
agent authenticates to Coffer with the usual profile / ``COFFER_*`` credentials. ``region`` selects a region
of the Coffer profile.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coffer.core import errors

DEFAULT_SSRF_HEADERS = ("X-Aws-Parameters-Secrets-Token", "X-Vault-Token")
DEFAULT_SSRF_ENV_VARIABLES = ("AWS_TOKEN", "AWS_SESSION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN")
LOG_LEVELS = ("DEBUG", "INFO", "WARN", "ERROR", "NONE")
#: Where AWS's agent logs when ``log_to_file`` is true (relative to the working directory).
LOG_FILE = Path("logs/secrets_manager_agent.log")


class AgentConfigError(errors.InvalidParameter):
    """The configuration file (or the SSRF token's variables) cannot be used; the message says why."""


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    log_level: str = "INFO"
    log_to_file: bool = True
    http_port: int = 2773
    region: str | None = None
    ttl_seconds: int = 300
    cache_size: int = 1000
    ssrf_headers: tuple[str, ...] = DEFAULT_SSRF_HEADERS
    ssrf_env_variables: tuple[str, ...] = DEFAULT_SSRF_ENV_VARIABLES
    path_prefix: str = "/v1/"
    max_conn: int = 800
    ignore_transient_errors: bool = True
    validate_credentials: bool = True


def _int(key: str, value: Any, low: int, high: int, *, also: int | None = None) -> int:
    if isinstance(value, bool):
        raise AgentConfigError(f"{key} must be a whole number, not {value!r}.")
    try:
        number = int(value.strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise AgentConfigError(f"{key} must be a whole number, not {value!r}.") from None
    if isinstance(value, float) and value != number:
        raise AgentConfigError(f"{key} must be a whole number, not {value!r}.")
    if number != also and not low <= number <= high:
        raise AgentConfigError(f"{key} must be between {low} and {high}, not {number}.")
    return number


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise AgentConfigError(f"{key} must be true or false, not {value!r}.")


def _names(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise AgentConfigError(f"{key} must be a non-empty list of non-empty strings.")
    return tuple(value)


def parse_config(data: Mapping[str, Any]) -> AgentConfig:
    """The configuration of a parsed TOML table; every key checked as AWS's agent does."""
    fields: dict[str, Any] = {}
    for key, value in data.items():
        match key:
            case "log_level":
                if not isinstance(value, str) or value.upper() not in LOG_LEVELS:
                    raise AgentConfigError(
                        f"log_level must be one of {', '.join(LOG_LEVELS)}, not {value!r}."
                    )
                fields[key] = value.upper()
            case "log_to_file" | "ignore_transient_errors" | "validate_credentials":
                fields[key] = _bool(key, value)
            case "http_port":
                fields[key] = _int(key, value, 1024, 65535, also=0)
            case "ttl_seconds":
                fields[key] = _int(key, value, 0, 3600)
            case "cache_size":
                fields[key] = _int(key, value, 1, 1000)
            case "max_conn":
                fields[key] = _int(key, value, 1, 1000)
            case "ssrf_headers" | "ssrf_env_variables":
                fields[key] = _names(key, value)
            case "path_prefix":
                if not isinstance(value, str) or not value.startswith("/"):
                    raise AgentConfigError(f"path_prefix must start with '/', not {value!r}.")
                fields[key] = value
            case "region":
                if not isinstance(value, str) or not value:
                    raise AgentConfigError("region must be a non-empty string.")
                fields[key] = value
            case "credentials_file_path":
                raise AgentConfigError(
                    "credentials_file_path is not supported: coffer agent authenticates with the Coffer "
                    "profile (--profile) or COFFER_ACCESS_KEY_ID / COFFER_SECRET_ACCESS_KEY."
                )
            case _:
                raise AgentConfigError(f"Unknown configuration key {key!r} in the agent's configuration.")
    return AgentConfig(**fields)


def load_config(path: Path | None) -> AgentConfig:
    """The configuration in the TOML file at ``path`` (None: every default)."""
    if path is None:
        return AgentConfig()
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise AgentConfigError(
            f"Could not read the configuration file {path}: {exc.strerror or exc}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise AgentConfigError(f"The configuration file {path} is not valid TOML: {exc}") from None
    return parse_config(data)


def read_ssrf_token(config: AgentConfig, env: Mapping[str, str] | None = None) -> str:
    """The SSRF token: the value of the first set variable of ``ssrf_env_variables`` (``file://<path>``: that
    file's contents, trimmed), read once at start, as AWS's agent does."""
    env = os.environ if env is None else env
    names = list(config.ssrf_env_variables)
    for name in names:
        value = env.get(name)
        if not value:
            continue
        if value.startswith("file://"):
            try:
                value = Path(value.removeprefix("file://")).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise AgentConfigError(
                    f"Could not read SSRF token variable(s) {names}: {name} names an unreadable file "
                    f"({exc.strerror or exc})"
                ) from None
        if value:
            return value
    raise AgentConfigError(f"Could not read SSRF token variable(s) {names}: none is set")
