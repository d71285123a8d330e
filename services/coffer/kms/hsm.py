"""The kms's HSM over PKCS#11 (``COFFER_SEAL=pkcs11``; ``python-pkcs11``; tested against SoftHSM2).

The root key is an AES-256 key object inside the token: ``CKA_SENSITIVE`` true and ``CKA_EXTRACTABLE`` false,
so its value never leaves the HSM. CMK material is wrapped by it with ``CKM_AES_GCM``
(``nonce (12) || ciphertext || tag (16)``, the material's binding as associated data),
computed inside the HSM on every wrap and unwrap.

PKCS#11 calls block, and a library initialised with ``C_Initialize(NULL)`` (what python-pkcs11 does) may not
be called from two threads at once (SoftHSM then switches its mutexes off and crashes under concurrent calls).
So one ``Hsm`` owns one single-thread executor, and the library, the logged-in session and the key handles
live in that thread only: every call is ``await loop.run_in_executor(worker, fn)``.

A token that disappears (removed, its directory moved away, the device failing) turns every call into
``errors.KmsHsmUnavailable`` (UNAVAILABLE, retryable, naming the token); the worker then drops its session and
handles, and the next call reinitialises the library, logs in again and finds the keys: restoring the token
heals the kms without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pkcs11
import structlog
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.mechanisms import GCMParams

from coffer.core import errors
from coffer.crypto.rootkey import MaterialBinding, UnwrapError

log = structlog.get_logger("coffer.kms")

DEFAULT_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
HSM_WRAP_VERSION = 0x02
KEY_ID_SIZE = 8
_NONCE_SIZE = 12
_HSM_ROOT_PREFIX = "hsm-"

T = TypeVar("T")

#: What a lost or failing token raises (GeneralError is ambiguous: also a bad GCM tag; see ``_decrypt``).
_UNAVAILABLE = (
    p11.DeviceRemoved,
    p11.DeviceError,
    p11.DeviceMemory,
    p11.TokenNotPresent,
    p11.TokenNotRecognised,
    p11.SessionHandleInvalid,
    p11.SessionClosed,
    p11.ObjectHandleInvalid,
    p11.NoSuchToken,
    p11.SlotIDInvalid,
    p11.UserNotLoggedIn,
    p11.GeneralError,
)


def root_key_id(cka_id: bytes) -> str:
    """The public root key id of an HSM key (its ``CKA_ID`` in hex, prefixed so it never looks like a file
    root's id)."""
    return _HSM_ROOT_PREFIX + cka_id.hex()


def cka_id_of(key_id: str) -> bytes:
    if not key_id.startswith(_HSM_ROOT_PREFIX):
        raise ValueError(f"not an HSM root key id: {key_id!r}")
    return bytes.fromhex(key_id.removeprefix(_HSM_ROOT_PREFIX))


@dataclass(frozen=True, slots=True)
class HsmConfig:
    module: str
    token_label: str
    pin: str
    key_label: str

    @classmethod
    def from_settings(
        cls, *, module: str, token_label: str, pin: str, pin_file: str, key_label: str
    ) -> HsmConfig:
        if not token_label:
            raise ValueError("COFFER_SEAL=pkcs11 needs COFFER_PKCS11_TOKEN_LABEL")
        if pin_file:
            try:
                pin = Path(pin_file).read_text().strip()
            except OSError as exc:
                raise ValueError(f"cannot read COFFER_PKCS11_PIN_FILE {pin_file}: {exc.strerror}") from None
        if not pin:
            raise ValueError("COFFER_SEAL=pkcs11 needs COFFER_PKCS11_PIN or COFFER_PKCS11_PIN_FILE")
        return cls(module=module or DEFAULT_MODULE, token_label=token_label, pin=pin, key_label=key_label)

    def __repr__(self) -> str:  # never the PIN
        return (
            f"HsmConfig(module={self.module!r}, token_label={self.token_label!r}, "
            f"key_label={self.key_label!r})"
        )


class Hsm:
    """One PKCS#11 token, reached from one worker thread. Use ``async with`` or ``aclose``."""

    def __init__(self, config: HsmConfig) -> None:
        self.config = config
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="coffer-hsm")
        # worker-thread state only
        self._lib: pkcs11.lib | None = None  # type: ignore[valid-type]
        self._session: pkcs11.Session | None = None
        self._keys: dict[bytes, pkcs11.SecretKey] = {}
        self._broken = False

    @property
    def name(self) -> str:
        return f"HSM token '{self.config.token_label}'"

    async def _run(self, fn: Callable[[pkcs11.Session], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, self._call, fn)

    # --- worker thread --------------------------------------------------------------------------------------

    def _open(self) -> pkcs11.Session:
        if self._session is not None:
            return self._session
        if self._lib is None:
            self._lib = pkcs11.lib(self.config.module)
            # a fresh C_Initialize reads the token configuration (SOFTHSM2_CONF) of now
            self._lib.reinitialize()
        elif self._broken:
            self._lib.reinitialize()
        token = self._lib.get_token(token_label=self.config.token_label)
        try:
            session = token.open(rw=True, user_pin=self.config.pin)
        except p11.UserAlreadyLoggedIn:  # login is per application and token: another session holds it
            session = token.open(rw=True)
        self._session = session
        self._broken = False
        return session

    def _drop(self) -> None:
        session, self._session = self._session, None
        self._keys.clear()
        self._broken = True
        if session is not None:
            with contextlib.suppress(Exception):
                session.close()

    def _call(self, fn: Callable[[pkcs11.Session], T]) -> T:
        try:
            session = self._open()
        except p11.PinIncorrect:
            raise errors.KmsHsmUnavailable(f"The {self.name} refused the configured PIN.") from None
        except (p11.PKCS11Error, OSError) as exc:
            self._drop()
            raise self._unavailable(exc) from None
        try:
            return fn(session)
        except _UNAVAILABLE as exc:
            if isinstance(exc, p11.GeneralError) and self._healthy(session):
                raise
            self._drop()
            raise self._unavailable(exc) from None

    def _healthy(self, session: pkcs11.Session) -> bool:
        try:
            session.token.label  # noqa: B018 - a cheap round trip to the token
            for cka_id in list(self._keys):
                self._keys[cka_id][Attribute.VALUE_LEN]
        except p11.PKCS11Error:
            return False
        return True

    def _unavailable(self, exc: BaseException) -> errors.KmsHsmUnavailable:
        log.warning(
            "kms.hsm_unavailable",
            token=self.config.token_label,
            module=self.config.module,
            error=type(exc).__name__,
        )
        return errors.KmsHsmUnavailable(
            f"The KMS cannot reach its {self.name}: {type(exc).__name__}. Retry when the token is back."
        )

    def _key(self, session: pkcs11.Session, cka_id: bytes) -> pkcs11.SecretKey:
        key = self._keys.get(cka_id)
        if key is None:
            try:
                found = session.get_key(
                    object_class=ObjectClass.SECRET_KEY,
                    key_type=KeyType.AES,
                    label=self.config.key_label,
                    id=cka_id,
                )
            except p11.NoSuchKey:
                raise errors.Internal(
                    f"The root key {root_key_id(cka_id)} ('{self.config.key_label}') is not in the "
                    f"{self.name}."
                ) from None
            assert isinstance(found, pkcs11.SecretKey)
            key = self._keys[cka_id] = found
        return key

    # --- operations -----------------------------------------------------------------------------------------

    async def key_ids(self) -> list[str]:
        """The root key ids of every AES key with the configured label in the token."""

        def find(session: pkcs11.Session) -> list[str]:
            found = session.get_objects(
                {
                    Attribute.CLASS: ObjectClass.SECRET_KEY,
                    Attribute.KEY_TYPE: KeyType.AES,
                    Attribute.LABEL: self.config.key_label,
                }
            )
            return sorted(root_key_id(bytes(o[Attribute.ID])) for o in found)

        return await self._run(find)

    async def generate(self) -> str:
        """A new non-extractable, sensitive AES-256 key in the token; returns its root key id."""
        cka_id = secrets.token_bytes(KEY_ID_SIZE)

        def generate(session: pkcs11.Session) -> str:
            key = session.generate_key(
                KeyType.AES,
                256,
                id=cka_id,
                label=self.config.key_label,
                store=True,
                capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
                template={
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.WRAP: False,
                    Attribute.UNWRAP: False,
                },
            )
            self._keys[cka_id] = key
            return root_key_id(cka_id)

        key_id = await self._run(generate)
        log.info("kms.hsm_key_generated", token=self.config.token_label, root_key_id=key_id)
        return key_id

    async def check(self, key_id: str) -> None:
        """Raise unless the key is in the token (``errors.Internal``) and the token answers."""
        cka_id = cka_id_of(key_id)
        await self._run(lambda session: self._key(session, cka_id) and None)

    async def destroy(self, key_id: str) -> bool:
        """Destroy the key object (False when it was already gone)."""
        cka_id = cka_id_of(key_id)

        def destroy(session: pkcs11.Session) -> bool:
            try:
                key = self._key(session, cka_id)
            except errors.Internal:
                return False
            key.destroy()
            self._keys.pop(cka_id, None)
            return True

        done = await self._run(destroy)
        if done:
            log.info("kms.hsm_key_destroyed", token=self.config.token_label, root_key_id=key_id)
        return done

    async def encrypt(self, key_id: str, plaintext: bytes, aad: bytes) -> bytes:
        cka_id = cka_id_of(key_id)
        nonce = secrets.token_bytes(_NONCE_SIZE)

        def encrypt(session: pkcs11.Session) -> bytes:
            key = self._key(session, cka_id)
            assert isinstance(key, pkcs11.types.EncryptMixin)
            out = key.encrypt(plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad))
            assert isinstance(out, bytes)
            return nonce + out

        return await self._run(encrypt)

    async def decrypt(self, key_id: str, sealed: bytes, aad: bytes) -> bytes:
        """Raises ``UnwrapError`` when the tag does not verify (tampered, moved, another key)."""
        cka_id = cka_id_of(key_id)
        nonce, body = sealed[:_NONCE_SIZE], sealed[_NONCE_SIZE:]
        if len(nonce) != _NONCE_SIZE or len(body) < 16:
            raise UnwrapError("truncated HSM wrap")

        def decrypt(session: pkcs11.Session) -> bytes:
            key = self._key(session, cka_id)
            assert isinstance(key, pkcs11.types.DecryptMixin)
            try:
                out = key.decrypt(body, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad))
            except p11.GeneralError:
                if not self._healthy(session):
                    raise
                raise UnwrapError("the HSM wrap does not authenticate") from None
            assert isinstance(out, bytes)
            return out

        return await self._run(decrypt)

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            await loop.run_in_executor(self._worker, self._drop)
        self._worker.shutdown(wait=True)


class HsmRoot:
    """A root key held in the HSM: wraps CMK material with CKM_AES_GCM inside the token."""

    __slots__ = ("_hsm", "_key_id")

    def __init__(self, hsm: Hsm, key_id: str) -> None:
        self._hsm = hsm
        self._key_id = key_id

    @property
    def key_id(self) -> str:
        return self._key_id

    @staticmethod
    def _aad(binding: MaterialBinding) -> bytes:
        return bytes((HSM_WRAP_VERSION,)) + binding.encode()

    async def wrap(self, material: bytes, binding: MaterialBinding) -> bytes:
        sealed = await self._hsm.encrypt(self._key_id, material, self._aad(binding))
        return bytes((HSM_WRAP_VERSION,)) + sealed

    async def unwrap(self, wrapped: bytes, binding: MaterialBinding) -> bytes:
        if not wrapped or wrapped[0] != HSM_WRAP_VERSION:
            raise UnwrapError("unknown wrap format")
        try:
            return await self._hsm.decrypt(self._key_id, wrapped[1:], self._aad(binding))
        except UnwrapError:
            raise UnwrapError(
                f"key material {binding.material_id} of key {binding.key_id} does not unwrap under HSM root "
                f"key {self._key_id}"
            ) from None

    def __repr__(self) -> str:
        return f"HsmRoot(key_id={self._key_id!r})"
