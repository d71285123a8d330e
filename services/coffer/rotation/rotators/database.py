"""The two database rotation strategies of AWS's rotation templates (single user, alternating users),
written once over a small driver interface that ``postgres.py`` and ``mysql.py`` implement.

The secret value is AWS's JSON document for database secrets: ``engine, host, port, username, password,
dbname`` (+ ``masterarn`` for alternating users); extra keys are kept as they are. Two keys of Coffer's own
say how to reach the server: ``ssl`` (default true: verified TLS, the certificate must chain to a trusted CA
and name ``host``; false: plaintext, an explicit opt-in) and ``ssl_ca`` (the PEM of the CA to trust instead
of the system's). ``host`` must be a TCP host the rotation target policy allows (``coffer.core.targets``):
never a Unix socket, and it is resolved and checked before each connection, which then goes to the checked
address.

- **Single user**: the user changes its own password. ``setSecret`` first tries the pending credentials (a
  retried rotation may already have set them), else logs in with AWSCURRENT, then AWSPREVIOUS.
- **Alternating users**: each rotation writes the *other* username (``<user>`` ⇄ ``<user>_clone``) into
  AWSPENDING; the master secret's credentials create the clone (with the original's grants) or set its
  password. Both users keep working, so a client holding the previous version keeps working.

Every step is idempotent for its token. Error messages never contain a password: they name the user, the host
and what failed, and any text that comes back from a driver is scrubbed of the passwords in play.
"""

from __future__ import annotations

import dataclasses
import json
import ssl
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from coffer.core import errors
from coffer.core.targets import UNREACHABLE_DATABASE, TargetRefused
from coffer.rotation.rotators.base import RotationStepError, StepContext, TargetUnreachable
from coffer.targets import TargetGuard, tls_client_context

AWSCURRENT = "AWSCURRENT"
AWSPENDING = "AWSPENDING"
AWSPREVIOUS = "AWSPREVIOUS"
CLONE_SUFFIX = "_clone"
# AWS's templates exclude these by default: they break connection strings and shell/SQL quoting.
DEFAULT_EXCLUDE_CHARACTERS = "/@\"'\\"

C = TypeVar("C")


@dataclass(frozen=True, slots=True)
class DbCredentials:
    """One version of a database secret, parsed. ``document`` is the whole JSON object (extra keys kept)."""

    engine: str
    host: str
    port: int
    username: str
    password: str
    dbname: str | None
    masterarn: str | None
    document: dict[str, Any]
    #: Verified TLS (the default) or plaintext (``"ssl": false``); ``ssl_ca``: the CA PEM to trust.
    tls: bool = True
    ssl_ca: str | None = None

    def where(self) -> str:
        """``user@host:port`` — for messages (never the password)."""
        return f"{self.username!r} at {self.host}:{self.port}"

    def with_login(self, *, username: str, password: str) -> str:
        doc = dict(self.document)
        doc["username"] = username
        doc["password"] = password
        return json.dumps(doc)


def scrub(text: str, secrets: tuple[str | None, ...]) -> str:
    """``text`` with every (non-trivial) password replaced by ``****``."""
    for value in secrets:
        if value and len(value) >= 3:
            text = text.replace(value, "****")
    return text


class DatabaseDriver(ABC, Generic[C]):
    """What a strategy needs from one database engine. ``connect`` returns None when the server refuses the
    credentials and raises RotationStepError when the server cannot be reached."""

    label: str  # "PostgreSQL", "MySQL/MariaDB"
    engines: frozenset[str]  # accepted values of the secret's "engine" key
    default_port: int
    default_dbname: str | None
    max_username_length: int
    exclude_characters: str = DEFAULT_EXCLUDE_CHARACTERS
    password_length: int = 32

    def __init__(self, *, targets: TargetGuard | None = None) -> None:
        self.targets = targets or TargetGuard.default()

    async def endpoint(self, creds: DbCredentials) -> tuple[str, ssl.SSLContext | None]:
        """The checked address to connect to and the TLS context (None: plaintext, opted in). Raises
        TargetUnreachable when the policy refuses the target."""
        try:
            address = await self.targets.address(creds.host, creds.port)
        except TargetRefused as exc:
            raise TargetUnreachable(
                UNREACHABLE_DATABASE,
                detail=f"{self.label} at {creds.host}:{creds.port} is refused by the rotation target policy: "
                f"{exc.message}",
            ) from None
        if not creds.tls:
            return address, None
        try:
            return address, tls_client_context(server_name=creds.host, ca_pem=creds.ssl_ca)
        except (ssl.SSLError, ValueError) as exc:
            raise RotationStepError(f"the secret's ssl_ca is not a usable CA certificate ({exc})") from None

    def unreachable(self, creds: DbCredentials, exc: BaseException) -> TargetUnreachable:
        """The generic failure for a target that could not be reached; the cause goes into the detail."""
        text = str(exc) or type(exc).__name__
        cause = exc.__cause__ or exc.__context__
        if cause is not None:  # drivers wrap the TLS or socket error that says why
            text += f" ({type(cause).__name__}: {cause})"
        text = scrub(text, (creds.password,))
        return TargetUnreachable(
            UNREACHABLE_DATABASE,
            detail=f"cannot connect to {self.label} at {creds.host}:{creds.port} as {creds.username!r}: "
            f"{type(exc).__name__}: {text}",
        )

    @abstractmethod
    async def connect(self, creds: DbCredentials) -> C | None: ...

    @abstractmethod
    async def close(self, conn: C) -> None: ...

    @abstractmethod
    async def probe(self, conn: C) -> None:
        """A harmless query proving the session works (AWS: ``SELECT NOW()``)."""

    @abstractmethod
    async def set_own_password(self, conn: C, *, username: str, password: str) -> None:
        """The logged-in user changes its own password."""

    @abstractmethod
    async def upsert_user(self, conn: C, *, username: str, password: str, grants_from: str) -> None:
        """As a privileged user: create ``username`` with ``password`` and ``grants_from``'s grants, or
        set its password if it exists. Idempotent."""

    # -- shared helpers ------------------------------------------------------------------------------------

    def parse(self, raw: str | None, *, what: str) -> DbCredentials:
        if raw is None:
            raise RotationStepError(f"{what} has no SecretString; a {self.label} secret is a JSON document")
        try:
            doc = json.loads(raw)
        except ValueError:
            raise RotationStepError(f"{what} is not valid JSON") from None
        if not isinstance(doc, dict):
            raise RotationStepError(f"{what} is not a JSON object")
        missing = [
            k for k in ("host", "username", "password") if not isinstance(doc.get(k), str) or not doc[k]
        ]
        if missing:
            raise RotationStepError(f"{what} lacks the key(s) {', '.join(missing)} (strings)")
        engine = doc.get("engine")
        if engine is not None and engine not in self.engines:
            raise RotationStepError(
                f"{what} has engine {engine!r}; this rotator takes {', '.join(sorted(self.engines))}"
            )
        port_raw = doc.get("port", self.default_port)
        try:
            port = int(port_raw)
        except (TypeError, ValueError):
            raise RotationStepError(f"{what} has a port that is not a number") from None
        dbname = doc.get("dbname")
        master = doc.get("masterarn")
        tls = doc.get("ssl", True)
        if not isinstance(tls, bool):
            raise RotationStepError(f"{what} has an 'ssl' key that is not true or false")
        ssl_ca = doc.get("ssl_ca")
        if ssl_ca is not None and not (isinstance(ssl_ca, str) and "-----BEGIN CERTIFICATE-----" in ssl_ca):
            raise RotationStepError(f"{what} has an 'ssl_ca' key that is not a PEM CA certificate")
        return DbCredentials(
            engine=str(engine or ""),
            host=doc["host"],
            port=port,
            username=doc["username"],
            password=doc["password"],
            dbname=str(dbname) if dbname else self.default_dbname,
            masterarn=str(master) if master else None,
            document=doc,
            tls=tls,
            ssl_ca=ssl_ca or None,
        )

    async def can_login(self, creds: DbCredentials) -> bool:
        conn = await self.connect(creds)
        if conn is None:
            return False
        try:
            await self.probe(conn)
        finally:
            await self.close(conn)
        return True


async def load(
    driver: DatabaseDriver[Any],
    ctx: StepContext,
    *,
    secret_id: str | None = None,
    version_id: str | None = None,
    stage: str,
) -> DbCredentials | None:
    """The parsed secret version, or None if it does not exist."""
    sid = secret_id or ctx.secret_arn
    try:
        value = await ctx.api.get_value(secret_id=sid, version_id=version_id, version_stage=stage)
    except errors.NotFound:
        return None
    return driver.parse(value.secret_string, what=f"the {stage} version of {sid}")


async def require(
    driver: DatabaseDriver[Any],
    ctx: StepContext,
    *,
    secret_id: str | None = None,
    version_id: str | None = None,
    stage: str,
) -> DbCredentials:
    found = await load(driver, ctx, secret_id=secret_id, version_id=version_id, stage=stage)
    if found is None:
        sid = secret_id or ctx.secret_arn
        which = f"version {version_id} ({stage})" if version_id else f"the {stage} version"
        raise RotationStepError(f"{which} of {sid} does not exist")
    return found


def step_failure(
    driver: DatabaseDriver[Any], action: str, exc: BaseException, *, secrets: tuple[str | None, ...]
) -> RotationStepError:
    """A RotationStepError for a database error, free of passwords."""
    detail = scrub(str(exc).strip() or type(exc).__name__, secrets)
    return RotationStepError(f"{driver.label} refused to {action}: {type(exc).__name__}: {detail}")


class _DatabaseRotator(ABC):
    name: str
    driver: DatabaseDriver[Any]

    @abstractmethod
    def pending_username(self, current: DbCredentials) -> str: ...

    async def _already_current(self, ctx: StepContext) -> bool:
        """AWS's dispatcher guard: a token already AWSCURRENT means the rotation is done (steps are no-ops); a
        token labelled neither AWSPENDING nor AWSCURRENT is stale and refused. A token that is not a version
        yet is allowed (createSecret's PutSecretValue creates it when there was no placeholder)."""
        labels = (await ctx.api.version_stages(secret_id=ctx.secret_arn)).get(ctx.token)
        if labels is None:
            return False
        if AWSCURRENT in labels:
            return True
        if AWSPENDING not in labels:
            raise RotationStepError(
                f"version {ctx.token} of {ctx.secret_arn} is not set as AWSPENDING; refusing to rotate to it"
            )
        return False

    async def create_secret(self, ctx: StepContext) -> None:
        if await self._already_current(ctx):
            return
        current = await require(self.driver, ctx, stage=AWSCURRENT)
        pending = await load(self.driver, ctx, version_id=ctx.token, stage=AWSPENDING)
        if pending is not None:
            return
        password = await ctx.api.random_password(
            length=self.driver.password_length, exclude_characters=self.driver.exclude_characters
        )
        value = current.with_login(username=self.pending_username(current), password=password)
        await ctx.api.put_pending_value(secret_id=ctx.secret_arn, token=ctx.token, secret_string=value)

    async def test_secret(self, ctx: StepContext) -> None:
        if await self._already_current(ctx):
            return
        pending = await require(self.driver, ctx, version_id=ctx.token, stage=AWSPENDING)
        if not await self.driver.can_login(pending):
            raise RotationStepError(
                f"{self.driver.label} refused the pending credentials of {pending.where()} in testSecret"
            )

    async def finish_secret(self, ctx: StepContext) -> None:
        stages = await ctx.api.version_stages(secret_id=ctx.secret_arn)
        current = next((vid for vid, labels in stages.items() if AWSCURRENT in labels), None)
        if current == ctx.token:
            return
        if ctx.token not in stages:
            raise RotationStepError(f"version {ctx.token} of {ctx.secret_arn} does not exist")
        await ctx.api.move_current(secret_id=ctx.secret_arn, to_version_id=ctx.token, from_version_id=current)


class SingleUserRotator(_DatabaseRotator):
    """The user changes its own password."""

    def __init__(self, *, name: str, driver: DatabaseDriver[Any]) -> None:
        self.name = name
        self.driver = driver

    def pending_username(self, current: DbCredentials) -> str:
        return current.username

    async def set_secret(self, ctx: StepContext) -> None:
        if await self._already_current(ctx):
            return
        driver = self.driver
        current = await require(driver, ctx, stage=AWSCURRENT)
        pending = await require(driver, ctx, version_id=ctx.token, stage=AWSPENDING)
        if await driver.can_login(pending):
            return  # already done (a retried rotation)
        if pending.username != current.username:
            raise RotationStepError(
                f"the pending username {pending.username!r} differs from the current {current.username!r}; "
                "a single-user rotation changes one user's password"
            )
        if pending.host != current.host:
            raise RotationStepError(
                f"the pending host {pending.host!r} differs from the current {current.host!r}"
            )
        conn = await driver.connect(current)
        if conn is None:
            previous = await load(driver, ctx, stage=AWSPREVIOUS)
            if previous is not None:
                if previous.username != pending.username or previous.host != pending.host:
                    raise RotationStepError(
                        "the AWSPREVIOUS username or host differs from the pending one; refusing to use it"
                    )
                conn = await driver.connect(previous)
        if conn is None:
            raise RotationStepError(
                f"{driver.label} refused the pending, current and previous credentials of {pending.where()}"
            )
        try:
            await driver.set_own_password(conn, username=pending.username, password=pending.password)
        except RotationStepError:
            raise
        except Exception as exc:
            raise step_failure(
                driver,
                f"change the password of {pending.where()}",
                exc,
                secrets=(pending.password, current.password),
            ) from None
        finally:
            await driver.close(conn)


class AlternatingUsersRotator(_DatabaseRotator):
    """``<user>`` and ``<user>_clone`` take turns; the master secret's credentials set their passwords."""

    def __init__(self, *, name: str, driver: DatabaseDriver[Any]) -> None:
        self.name = name
        self.driver = driver

    def pending_username(self, current: DbCredentials) -> str:
        if current.masterarn is None:
            raise RotationStepError(
                "the secret has no 'masterarn' key; the alternating-users strategy needs the ARN of a "
                "secret holding credentials that may create users"
            )
        if current.username.endswith(CLONE_SUFFIX):
            return current.username[: -len(CLONE_SUFFIX)]
        alt = current.username + CLONE_SUFFIX
        if len(alt.encode()) > self.driver.max_username_length:
            raise RotationStepError(
                f"the clone name {alt!r} is longer than {self.driver.label}'s limit of "
                f"{self.driver.max_username_length} bytes; use a shorter username"
            )
        return alt

    async def set_secret(self, ctx: StepContext) -> None:
        if await self._already_current(ctx):
            return
        driver = self.driver
        current = await require(driver, ctx, stage=AWSCURRENT)
        pending = await require(driver, ctx, version_id=ctx.token, stage=AWSPENDING)
        if await driver.can_login(pending):
            return  # already done (a retried rotation)
        # Confused-deputy guard (as AWS's templates): the current credentials must work before the master's
        # are used on this target.
        if not await driver.can_login(current):
            raise RotationStepError(
                f"{driver.label} refused the current credentials of {current.where()}; "
                "not using the master credentials on an unverified target"
            )
        if current.masterarn is None:
            raise RotationStepError("the secret has no 'masterarn' key")
        if pending.host != current.host:
            raise RotationStepError(
                f"the pending host {pending.host!r} differs from the current {current.host!r}"
            )
        if pending.username not in (current.username, self._other(current.username)):
            raise RotationStepError(
                f"the pending username {pending.username!r} is neither {current.username!r} nor its alternate"
            )
        master = await require(driver, ctx, secret_id=current.masterarn, stage=AWSCURRENT)
        if master.host != current.host:
            raise RotationStepError(
                f"the master secret's host {master.host!r} differs from the secret's host {current.host!r}"
            )
        # The master logs in to the secret's own database unless the master secret names one.
        if master.document.get("dbname") is None and current.dbname is not None:
            master = dataclasses.replace(master, dbname=current.dbname, masterarn=None)
        conn = await driver.connect(master)
        if conn is None:
            raise RotationStepError(
                f"{driver.label} refused the master secret's credentials ({master.where()})"
            )
        try:
            await driver.upsert_user(
                conn, username=pending.username, password=pending.password, grants_from=current.username
            )
        except RotationStepError:
            raise
        except Exception as exc:
            raise step_failure(
                driver,
                f"create or update the user {pending.username!r} as {master.username!r}",
                exc,
                secrets=(pending.password, current.password, master.password),
            ) from None
        finally:
            await driver.close(conn)

    @staticmethod
    def _other(username: str) -> str:
        if username.endswith(CLONE_SUFFIX):
            return username[: -len(CLONE_SUFFIX)]
        return username + CLONE_SUFFIX
