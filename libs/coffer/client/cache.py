"""A caching client with the shape of AWS's ``aws-secretsmanager-caching``, told about changes as they happen.

    cache = SecretCache(client=AsyncCofferClient.from_env())          # async
    password = await cache.get_secret_string("db/prod")

    cache = SyncSecretCache()                                         # threads: its own loop thread
    password = cache.get_secret_string("db/prod")

    @InjectKeywordedSecretString("db/prod", cache, user="username", password="password")
    def connect(user: str, password: str) -> None: ...

What is the same as AWS's library: ``SecretCacheConfig`` with its option names and defaults
(``max_cache_size`` 1024 secrets, LRU; ``secret_refresh_interval`` 3600 s with AWS's jitter, an entry is due
again after a random time in [interval/2, interval]; failures back off ``exception_retry_delay_base ·
exception_retry_growth_factor^n`` s up to ``exception_retry_delay_max``, and while backing off the stored
error is raised again); ``get_secret_string`` / ``get_secret_binary`` answer ``None`` when no version
carries the stage; ``refresh_secret_now``; the two decorators (for sync and async functions).

What is better: the cache follows ``WatchSecrets`` (one background task per cache, every secret the caller
may describe, filtered here: the set of cached secrets changes with every read, and re-subscribing with a
new filter each time would cost a stream per miss) and drops every entry of a secret as soon as an event
about it arrives, so a rotation is seen within the stream's latency whatever the TTL. While the stream is
down the TTL is the only bound (it always applies); the task reconnects with back-off and resumes with the
last token it saw, so nothing is missed; when the server says the token is too old (or the stream starts
afresh, without a token) every entry is dropped, since changes may have been missed. A read that raced an
event about its secret is served but not kept.

What differs on purpose: a failed refresh serves the last good value only for transient failures (the
gateway unreachable, a deadline, throttling, a 5xx-class error: AWS's agent's ``ignore_transient_errors``);
after e.g. ``AccessDeniedException`` or ``ResourceNotFoundException`` the error is raised, where AWS's library
would keep serving the old value. One ``GetSecretValue`` per miss (it answers ARN, version and stages), not
``DescribeSecret`` + ``GetSecretValue``. ``refresh_secret_now`` does not sleep.

Values live in memory only and are never logged (only secret ids, ARNs and event kinds are).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import datetime as dt
import functools
import inspect
import json
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from coffer import logs
from coffer.core import errors

log = logs.get_logger("coffer.client.cache")

DEFAULT_VERSION_STAGE = "AWSCURRENT"
#: Event kinds that say nothing about a secret (the stream is alive, here is a fresh token).
HEARTBEAT = "Heartbeat"
#: What the server answers for a resume token too old to resume from (InvalidRequestException) or not one
#: it issued (InvalidParameterException): either way, start afresh.
RESYNC_CODES = frozenset({"InvalidRequestException", "InvalidParameterException"})
#: How many recent events a read that started before them is checked against (older: not kept).
_RECENT_EVENTS = 4096

T = TypeVar("T")


class ChangeEvent(Protocol):
    """What the cache reads of a ``SecretChangeEvent``."""

    @property
    def resume_token(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def arn(self) -> str: ...
    @property
    def name(self) -> str: ...


class SecretValue(Protocol):
    """What the cache reads of a ``GetSecretValueResponse``."""

    @property
    def arn(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def version_id(self) -> str: ...
    @property
    def secret_string(self) -> str: ...
    @property
    def secret_binary(self) -> bytes: ...
    @property
    def version_stages(self) -> Any: ...
    @property
    def created_date(self) -> Any: ...

    def HasField(self, field_name: str) -> bool: ...


class CacheClient(Protocol):
    """The calls the cache makes: ``AsyncCofferClient`` has them (fakes in unit tests too)."""

    async def get_secret_value(self, **fields: Any) -> Any: ...

    async def describe_secret(self, **fields: Any) -> Any: ...

    def watch_secrets(
        self, *, resume_token: str | None = None, secret_ids: Any = (), name_prefix: str | None = None
    ) -> AsyncIterator[Any]: ...


@dataclass(frozen=True, kw_only=True)
class SecretCacheConfig:
    """AWS's ``SecretCacheConfig`` options (same names and defaults; ``secret_cache_hook`` is not offered:
    values stay in this process's memory) and Coffer's own: ``watch`` (follow the change stream; off: TTL
    only, like AWS), ``watch_name_prefix`` (follow only secrets whose name starts with this),
    ``watch_retry_delay_base`` / ``watch_retry_delay_max`` (reconnect back-off, seconds),
    ``ignore_transient_errors`` (serve the last good value while a refresh fails transiently, as AWS's
    agent's key of that name)."""

    max_cache_size: int = 1024
    exception_retry_delay_base: float = 1
    exception_retry_growth_factor: float = 2
    exception_retry_delay_max: float = 3600
    default_version_stage: str = DEFAULT_VERSION_STAGE
    secret_refresh_interval: float = 3600
    watch: bool = True
    watch_name_prefix: str | None = None
    watch_retry_delay_base: float = 0.5
    watch_retry_delay_max: float = 30
    ignore_transient_errors: bool = True

    def __post_init__(self) -> None:
        if self.max_cache_size < 1:
            raise errors.InvalidParameter("max_cache_size must be at least 1.")
        if self.secret_refresh_interval < 0:
            raise errors.InvalidParameter("secret_refresh_interval must be 0 (no caching) or more seconds.")
        if self.exception_retry_delay_base < 0 or self.exception_retry_delay_max < 0:
            raise errors.InvalidParameter("exception_retry_delay_base and _max must be 0 or more seconds.")
        if self.exception_retry_growth_factor < 1:
            raise errors.InvalidParameter("exception_retry_growth_factor must be 1 or more.")
        if not self.default_version_stage:
            raise errors.InvalidParameter("default_version_stage must not be empty.")
        if self.watch_retry_delay_base <= 0 or self.watch_retry_delay_max < self.watch_retry_delay_base:
            raise errors.InvalidParameter("watch_retry_delay_base must be > 0 and <= watch_retry_delay_max.")


@dataclass(frozen=True)
class CachedSecret:
    """One version as GetSecretValue answered it (``secret_string`` / ``secret_binary``: None when absent)."""

    arn: str
    name: str
    version_id: str
    secret_string: str | None
    secret_binary: bytes | None
    version_stages: tuple[str, ...]
    created_date: dt.datetime | None

    def __repr__(self) -> str:  # never the value
        return f"CachedSecret(arn={self.arn!r}, version_id={self.version_id!r})"

    @classmethod
    def of(cls, response: SecretValue) -> CachedSecret:
        created: dt.datetime | None = None
        if response.HasField("created_date"):
            created = response.created_date.ToDatetime(tzinfo=dt.UTC)
        return cls(
            arn=response.arn,
            name=response.name,
            version_id=response.version_id,
            secret_string=response.secret_string if response.HasField("secret_string") else None,
            secret_binary=response.secret_binary if response.HasField("secret_binary") else None,
            version_stages=tuple(response.version_stages),
            created_date=created,
        )


#: (secret id as given, version id or "", version stage or "")
Key = tuple[str, str, str]


@dataclass
class _Entry:
    key: Key
    value: CachedSecret | None = None
    #: True when the answer is "no version carries this stage" (AWS's library answers None then).
    absent: bool = False
    loaded: bool = False
    due: float = 0.0
    error: errors.CofferError | None = None
    error_count: int = 0
    retry_at: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class CacheStats:
    """Counters a bench or a test reads (not values)."""

    hits: int = 0
    misses: int = 0
    events: int = 0
    invalidations: int = 0
    resyncs: int = 0
    stream_connects: int = 0
    stream_failures: int = 0


def _transient(error: errors.CofferError) -> bool:
    """A failure a later attempt may not meet (the stale value may be served meanwhile)."""
    return isinstance(error, errors.Unavailable | errors.Internal | errors.Throttling)


class SecretCache:
    """The asynchronous cache (one per event loop; safe for any number of concurrent tasks).

    ``client``: an ``AsyncCofferClient`` (default ``AsyncCofferClient.from_env()``, closed with the cache).
    The change stream starts with the first read (or ``await cache.start()``); ``await cache.close()`` (or
    ``async with``) stops it."""

    def __init__(
        self,
        config: SecretCacheConfig | None = None,
        client: CacheClient | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config if config is not None else SecretCacheConfig()
        self._owns_client = client is None
        if client is None:
            from coffer.client.aio import AsyncCofferClient

            client = AsyncCofferClient.from_env()
        self._client: CacheClient = client
        self._clock = clock
        self._entries: collections.OrderedDict[Key, _Entry] = collections.OrderedDict()
        #: ARN / name / id as given → keys of entries about that secret.
        self._index: dict[str, set[Key]] = {}
        #: Bumped for every event about a secret; (epoch, arn, name) of the most recent ones.
        self._epoch = 0
        self._recent: collections.deque[tuple[int, str, str]] = collections.deque(maxlen=_RECENT_EVENTS)
        self._resume_token: str | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._closed = False
        #: Set while the stream is delivering (after its first event, until it fails).
        self.stream_connected = asyncio.Event()
        self.stats = CacheStats()
        #: Called with every event after it is applied (heartbeats too): a bench timing a change's arrival, a
        #: test waiting for the stream to pass a point. Must not block.
        self.event_listeners: list[Callable[[ChangeEvent], None]] = []

    @property
    def config(self) -> SecretCacheConfig:
        return self._config

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start following the change stream (idempotent; reads call it)."""
        if self._closed:
            raise errors.InvalidRequest("This SecretCache is closed.")
        if self._config.watch and self._watch_task is None:
            self._watch_task = asyncio.get_running_loop().create_task(
                self._follow(), name="coffer-cache-watch"
            )

    async def close(self) -> None:
        self._closed = True
        task, self._watch_task = self._watch_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.clear()
        if self._owns_client:
            close = getattr(self._client, "close", None)
            if close is not None:
                await close()

    async def __aenter__(self) -> SecretCache:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- reads -----------------------------------------------------------------------------------------

    async def get_secret_string(self, secret_id: str, version_stage: str | None = None) -> str | None:
        """The SecretString of the version carrying ``version_stage`` (default AWSCURRENT); None when no
        version carries it (or the version holds a binary)."""
        value = await self.get_secret_value(secret_id, version_stage=version_stage)
        return value.secret_string if value is not None else None

    async def get_secret_binary(self, secret_id: str, version_stage: str | None = None) -> bytes | None:
        """The SecretBinary of the version carrying ``version_stage``; None when there is none."""
        value = await self.get_secret_value(secret_id, version_stage=version_stage)
        return value.secret_binary if value is not None else None

    async def get_secret_value(
        self,
        secret_id: str,
        *,
        version_id: str | None = None,
        version_stage: str | None = None,
        refresh_now: bool = False,
    ) -> CachedSecret | None:
        """The cached GetSecretValue answer (the agent's read): by stage (default the config's), or by
        version id (and stage, when both are given: they must agree, as GetSecretValue says). None: no
        version carries the stage. ``refresh_now``: ask the service whatever the cache holds."""
        if not secret_id:
            raise errors.InvalidParameter("You must specify a secret ID (a name or an ARN).")
        if self._config.watch and self._watch_task is None and not self._closed:
            await self.start()
        stage = version_stage or ("" if version_id else self._config.default_version_stage)
        key: Key = (secret_id, version_id or "", stage)
        entry = self._entries.get(key)
        if entry is not None and not refresh_now and self._fresh(entry):
            self._entries.move_to_end(key)
            self.stats.hits += 1
            return entry.value
        if entry is None:
            entry = self._insert(key)
        async with entry.lock:
            if not refresh_now and self._fresh(entry):  # another task filled it meanwhile
                self.stats.hits += 1
                return entry.value
            now = self._clock()
            if not refresh_now and entry.error is not None and now < entry.retry_at:
                if entry.loaded and self._serve_stale(entry.error):
                    return entry.value
                raise entry.error
            self.stats.misses += 1
            return await self._load(entry)

    async def refresh_secret_now(self, secret_id: str) -> bool:
        """Fetch the secret's default-stage value now (every entry of the secret dropped first); True when
        the service answered."""
        self._drop_keys(set(self._index.get(secret_id, ())))
        try:
            await self.get_secret_value(secret_id, refresh_now=True)
        except errors.CofferError:
            return False
        return True

    def clear(self) -> None:
        """Forget every entry (values included)."""
        self._entries.clear()
        self._index.clear()

    def __len__(self) -> int:
        return len(self._entries)

    # -- internals -------------------------------------------------------------------------------------

    def _serve_stale(self, error: errors.CofferError) -> bool:
        return self._config.ignore_transient_errors and _transient(error)

    def _fresh(self, entry: _Entry) -> bool:
        return entry.loaded and entry.error is None and self._clock() < entry.due

    def _insert(self, key: Key) -> _Entry:
        entry = _Entry(key)
        self._entries[key] = entry
        self._index.setdefault(key[0], set()).add(key)
        while len(self._entries) > self._config.max_cache_size:
            old_key, old = self._entries.popitem(last=False)
            self._unindex(old_key, old)
        return entry

    def _unindex(self, key: Key, entry: _Entry) -> None:
        names = {key[0]}
        if entry.value is not None:
            names.update((entry.value.arn, entry.value.name))
        for name in names:
            keys = self._index.get(name)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._index[name]

    def _drop_keys(self, keys: set[Key]) -> None:
        for key in keys:
            entry = self._entries.pop(key, None)
            if entry is not None:
                self._unindex(key, entry)

    def _next_due(self) -> float:
        interval = self._config.secret_refresh_interval
        return self._clock() + random.uniform(interval / 2, interval)

    def _changed_since(self, epoch: int, arn: str, name: str, secret_id: str) -> bool:
        """Whether an event about this secret arrived after ``epoch`` (True when too far back to tell)."""
        if self._epoch == epoch:
            return False
        if not self._recent or self._recent[0][0] > epoch + 1:
            return True
        return any(
            e > epoch and (a in (arn, secret_id) or n in (name, secret_id)) for e, a, n in self._recent
        )

    async def _load(self, entry: _Entry) -> CachedSecret | None:
        secret_id, version_id, stage = entry.key
        fields: dict[str, Any] = {"secret_id": secret_id}
        if version_id:
            fields["version_id"] = version_id
        if stage:
            fields["version_stage"] = stage
        epoch = self._epoch
        try:
            value: CachedSecret | None = CachedSecret.of(await self._client.get_secret_value(**fields))
        except errors.NotFound as exc:
            value = None
            if not (stage and not version_id and await self._secret_exists(secret_id)):
                self._failed(entry, exc)
                if entry.loaded and self._serve_stale(exc):
                    return entry.value
                raise
        except errors.CofferError as exc:
            self._failed(entry, exc)
            if entry.loaded and self._serve_stale(exc):
                return entry.value
            raise
        # A value read while an event about its secret arrived may predate that change: served, not kept.
        arn, name = (value.arn, value.name) if value is not None else ("", "")
        if self._entries.get(entry.key) is not entry:
            return value  # dropped (an event, a resync) or evicted while it was read
        if self._changed_since(epoch, arn, name, secret_id):
            self._drop_keys({entry.key})
            return value
        entry.value, entry.absent, entry.loaded = value, value is None, True
        entry.error, entry.error_count, entry.retry_at = None, 0, 0.0
        entry.due = self._next_due()
        if value is not None:
            self._index.setdefault(value.arn, set()).add(entry.key)
            self._index.setdefault(value.name, set()).add(entry.key)
        return value

    async def _secret_exists(self, secret_id: str) -> bool:
        """After ResourceNotFound for a stage: does the secret exist (then no version carries the stage and
        the answer is None, as AWS's library says)?"""
        try:
            await self._client.describe_secret(secret_id=secret_id)
        except errors.CofferError:
            return False
        return True

    def _failed(self, entry: _Entry, error: errors.CofferError) -> None:
        cfg = self._config
        delay = min(
            cfg.exception_retry_delay_base * cfg.exception_retry_growth_factor**entry.error_count,
            cfg.exception_retry_delay_max,
        )
        entry.error, entry.error_count = error, entry.error_count + 1
        entry.retry_at = self._clock() + delay
        log.info("secret_cache_read_failed", secret_id=entry.key[0], code=error.code)

    # -- the change stream -----------------------------------------------------------------------------

    def apply_event(self, event: ChangeEvent) -> None:
        """Take one event: remember its token; drop every entry about its secret. (The watch task calls
        this; public so that a bench or a test can feed events.)"""
        if event.resume_token:
            self._resume_token = event.resume_token
        if event.kind != HEARTBEAT:
            self._invalidate(event)
        for listener in self.event_listeners:
            listener(event)

    def _invalidate(self, event: ChangeEvent) -> None:
        self.stats.events += 1
        self._epoch += 1
        self._recent.append((self._epoch, event.arn, event.name))
        keys: set[Key] = set()
        for name in (event.arn, event.name):
            if name:
                keys |= self._index.get(name, set())
        if keys:
            self.stats.invalidations += len(keys)
            self._drop_keys(keys)
            log.debug("secret_cache_invalidated", kind=event.kind, arn=event.arn, entries=len(keys))

    def _resync(self) -> None:
        """Changes may have been missed: nothing cached can be trusted beyond what the stream said."""
        if self._entries:
            self.stats.resyncs += 1
        self._epoch += 1
        self._recent.clear()
        self.clear()

    async def _follow(self) -> None:
        cfg = self._config
        failures = 0
        while not self._closed:
            if self._resume_token is None:
                self._resync()
            try:
                stream = self._client.watch_secrets(
                    resume_token=self._resume_token, name_prefix=cfg.watch_name_prefix
                )
                async for event in stream:
                    if not self.stream_connected.is_set():
                        self.stream_connected.set()
                        self.stats.stream_connects += 1
                        failures = 0
                    self.apply_event(event)
                raise errors.Unavailable("The change stream ended.")
            except asyncio.CancelledError:
                raise
            except errors.CofferError as exc:
                if exc.code in RESYNC_CODES and self._resume_token is not None:
                    log.warning("secret_cache_resync", reason=exc.message)
                    self._resume_token = None
                    failures = 0
                else:
                    log.info("secret_cache_stream_down", code=exc.code)
            except Exception as exc:
                log.warning("secret_cache_stream_failed", error=type(exc).__name__)
            self.stream_connected.clear()
            self.stats.stream_failures += 1
            delay = min(cfg.watch_retry_delay_base * 2**failures, cfg.watch_retry_delay_max)
            failures += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))


class SyncSecretCache:
    """The same cache for threads: a ``SecretCache`` on its own event loop thread (its client made there by
    ``connect``, default ``AsyncCofferClient.from_env``). Every method blocks until answered; safe from any
    number of threads. ``close()`` (or ``with``) stops the thread."""

    def __init__(
        self,
        config: SecretCacheConfig | None = None,
        connect: Callable[[], CacheClient] | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="coffer-cache", daemon=True)
        self._thread.start()
        self._closed = False

        async def make() -> SecretCache:
            if connect is None:
                return SecretCache(config)
            cache = SecretCache(config, connect())
            cache._owns_client = True  # made here, for this cache only
            return cache

        self.cache: SecretCache = self._run(make())

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result()

    @property
    def stats(self) -> CacheStats:
        return self.cache.stats

    def get_secret_string(self, secret_id: str, version_stage: str | None = None) -> str | None:
        return self._run(self.cache.get_secret_string(secret_id, version_stage))

    def get_secret_binary(self, secret_id: str, version_stage: str | None = None) -> bytes | None:
        return self._run(self.cache.get_secret_binary(secret_id, version_stage))

    def get_secret_value(
        self,
        secret_id: str,
        *,
        version_id: str | None = None,
        version_stage: str | None = None,
        refresh_now: bool = False,
    ) -> CachedSecret | None:
        return self._run(
            self.cache.get_secret_value(
                secret_id, version_id=version_id, version_stage=version_stage, refresh_now=refresh_now
            )
        )

    def refresh_secret_now(self, secret_id: str) -> bool:
        return self._run(self.cache.refresh_secret_now(secret_id))

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Block until the change stream delivers (True) or ``timeout`` passes (False)."""

        async def wait() -> bool:
            await self.cache.start()
            try:
                await asyncio.wait_for(self.cache.stream_connected.wait(), timeout)
            except TimeoutError:
                return False
            return True

        return self._run(wait())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._run(self.cache.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> SyncSecretCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- decorators (AWS's names and semantics) -----------------------------------------------------------------


def _inject_first(args: tuple[Any, ...], func: Callable[..., Any], secret: Any) -> tuple[Any, ...]:
    # As AWS's: after ``self`` when the first argument's class has the function as an attribute.
    if args and hasattr(args[0].__class__, func.__name__):
        return (args[0], secret, *args[1:])
    return (secret, *args)


def _keyworded(secret: str | None, kwarg_map: dict[str, str]) -> dict[str, Any]:
    try:
        parsed = json.loads(secret)  # type: ignore[arg-type]
    except (json.JSONDecodeError, TypeError):
        raise RuntimeError("Cached secret is not valid JSON") from None
    resolved: dict[str, Any] = {}
    for kwarg, json_key in kwarg_map.items():
        try:
            resolved[kwarg] = parsed[json_key]
        except (KeyError, TypeError):
            raise RuntimeError(f"Cached secret does not contain key {json_key}") from None
    return resolved


async def _string_async(cache: Any, secret_id: str) -> str | None:
    got = cache.get_secret_string(secret_id=secret_id)
    return await got if inspect.isawaitable(got) else got  # type: ignore[no-any-return]


def _string_sync(cache: Any, secret_id: str) -> str | None:
    got = cache.get_secret_string(secret_id=secret_id)
    if inspect.isawaitable(got):
        if inspect.iscoroutine(got):
            got.close()
        raise TypeError(
            "A sync function needs a SyncSecretCache (this cache is async: decorate an async def)"
        )
    return got  # type: ignore[no-any-return]


class InjectSecretString:
    """``@InjectSecretString(secret_id, cache)``: the secret string passed as the first positional argument
    (after ``self`` for methods). Async functions read from a ``SecretCache``, sync ones from a
    ``SyncSecretCache`` (or any object with a sync ``get_secret_string``)."""

    def __init__(self, secret_id: str, cache: SecretCache | SyncSecretCache) -> None:
        self.cache = cache
        self.secret_id = secret_id

    def __call__(self, func: Callable[..., T]) -> Callable[..., T]:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def awrapped(*args: Any, **kwargs: Any) -> Any:
                secret = await _string_async(self.cache, self.secret_id)
                return await func(*_inject_first(args, func, secret), **kwargs)

            return awrapped  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapped(*args: Any, **kwargs: Any) -> T:
            secret = _string_sync(self.cache, self.secret_id)
            return func(*_inject_first(args, func, secret), **kwargs)

        return wrapped


class InjectKeywordedSecretString:
    """``@InjectKeywordedSecretString(secret_id, cache, kwarg="json_key", ...)``: the SecretString parsed as
    JSON and each mapped key passed as that keyword argument. ``RuntimeError("Cached secret is not valid
    JSON")`` / ``RuntimeError("Cached secret does not contain key <k>")`` as AWS's."""

    def __init__(self, secret_id: str, cache: SecretCache | SyncSecretCache, **kwargs: str) -> None:
        self.cache = cache
        self.kwarg_map = kwargs
        self.secret_id = secret_id

    def __call__(self, func: Callable[..., T]) -> Callable[..., T]:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def awrapped(*args: Any, **kwargs: Any) -> Any:
                resolved = _keyworded(await _string_async(self.cache, self.secret_id), self.kwarg_map)
                return await func(*args, **resolved, **kwargs)

            return awrapped  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapped(*args: Any, **kwargs: Any) -> T:
            resolved = _keyworded(_string_sync(self.cache, self.secret_id), self.kwarg_map)
            return func(*args, **resolved, **kwargs)

        return wrapped


__all__ = [
    "CacheClient",
    "CacheStats",
    "CachedSecret",
    "InjectKeywordedSecretString",
    "InjectSecretString",
    "SecretCache",
    "SecretCacheConfig",
    "SyncSecretCache",
]
