"""The rotation service as a process (the ``make run`` deployment): SIGKILLed while each of the four steps is
in progress, in turn, then started again — every rotation still completes, AWSCURRENT is the new key and the
target accepts it. The steps are held by a custom rotation function (the example under ``examples/``) that
runs in this test process and waits, at the chosen step, until the test lets it go."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.client.aio import AsyncCofferClient
from coffer.client.sync import CofferClient
from coffer.devrun import Deployment
from coffer.pki import ensure_pki
from coffer.settings import Settings
from coffer.testing.wait import eventually_sync

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "rotation_function" / "api_key_function.py"
STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("coffer_example_api_key_function_crash", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class FunctionThread:
    """The example rotation function served from a thread with its own event loop; ``hold(step)`` makes the
    next call of ``step`` wait until ``release()``."""

    def __init__(self, deployment: Deployment, workdir: Path) -> None:
        self.example = load_example()
        self.pki = workdir / "fn-pki"
        ensure_pki(self.pki, identities=["api-key-function"])
        self.target = self.example.KeyFileTarget(workdir / "keys.json")
        self.deployment = deployment
        self.hold_step: str | None = None
        self.reached = threading.Event()
        self.released = threading.Event()
        self.port = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def hold(self, step: str) -> None:
        self.reached.clear()
        self.released.clear()
        self.hold_step = step

    def release(self) -> None:
        self.released.set()

    async def _before_step(self, step: str, token: str) -> None:
        if step == self.hold_step:
            self.hold_step = None
            self.reached.set()
            while not self.released.is_set():  # noqa: ASYNC110 - a threading.Event set by the test thread
                await asyncio.sleep(0.02)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        client = AsyncCofferClient(self.deployment.endpoint, self.deployment.ca_file, self.deployment.admin)
        function = self.example.ApiKeyRotationFunction(client, self.target, before_step=self._before_step)
        server, self.port = await self.example.serve(
            function,
            bind="127.0.0.1:0",
            cert_pem=(self.pki / "api-key-function.crt").read_bytes(),
            key_pem=(self.pki / "api-key-function.key").read_bytes(),
            caller_ca_pem=self.deployment.ca_file.read_bytes(),
        )
        self._ready.set()
        await self._stop.wait()
        await server.stop(0.2)
        await client.close()

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(20)

    def stop(self) -> None:
        self.released.set()
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def deployment(e2e_tools: Any, tmp_path: Path) -> Iterator[Deployment]:
    home = tmp_path / "home"
    env = e2e_tools.env_for(home, database_url=e2e_tools.new_database())
    env.update(
        {
            "COFFER_ROTATION_POLL_SECONDS": "0.3",
            "COFFER_ROTATION_LEASE_SECONDS": "2",
            "COFFER_ROTATION_BACKOFF_BASE_SECONDS": "0.1",
            "COFFER_ROTATION_WORKERS": "2",
            "COFFER_ROTATION_ALLOWED_TARGETS": "127.0.0.1",  # the function listens on a free loopback port
        }
    )
    lines: list[str] = []
    dep = Deployment(Settings.from_env(env), echo=lines.append, health_timeout=60.0)
    dep.start()
    try:
        yield dep
    finally:
        dep.stop()


def wait_attempt(
    client: CofferClient, secret_id: str, token: str, within: float = 40.0
) -> sm.RotationAttempt:

    def this_attempt() -> sm.RotationAttempt | None:
        reply = client.call("ListRotationAttempts", secret_id=secret_id)
        assert isinstance(reply, sm.ListRotationAttemptsResponse)
        return next((a for a in reply.attempts if a.version_id == token), None)

    attempt = eventually_sync(
        this_attempt,
        until=lambda a: a is not None and a.status in ("Succeeded", "Failed"),
        timeout=within,
        interval=0.1,
        message=f"rotation {token} to finish",
    )
    assert attempt is not None
    return attempt


def test_sigkill_during_each_step_then_restart_completes_the_rotation(
    deployment: Deployment, tmp_path: Path
) -> None:
    client = CofferClient(deployment.endpoint, deployment.ca_file, deployment.admin)
    fn = FunctionThread(deployment, tmp_path)
    fn.start()
    try:
        reply = client.call(
            "RegisterRotationFunction",
            name="crash-test",
            endpoint=f"127.0.0.1:{fn.port}",
            ca_pem=(fn.pki / "ca.crt").read_text(),
            server_name="api-key-function",
        )
        arn = reply.function.arn  # type: ignore[attr-defined]
        name = f"svc/crash-{uuid.uuid4().hex[:6]}"
        client.create_secret(name=name, secret_string="key-0")
        fn.target.add("key-0")
        for i, step in enumerate(STEPS):
            fn.hold(step)
            fields = {"rotation_lambda_arn": arn} if i == 0 else {}
            token = client.call("RotateSecret", secret_id=name, **fields).version_id  # type: ignore[attr-defined]
            assert fn.reached.wait(30), f"{step} was never called"
            code = deployment.kill_service("rotation")
            assert code == -9
            deployment.start_service("rotation")
            fn.release()
            attempt = wait_attempt(client, name, token)
            assert attempt.status == "Succeeded", (step, attempt.error)
            assert attempt.tries >= 2, (step, attempt)
            current = client.get_secret_value(secret_id=name)
            assert current.version_id == token, step
            assert fn.target.accepts(current.secret_string), step
            previous = client.get_secret_value(secret_id=name, version_stage="AWSPREVIOUS")
            assert previous.secret_string != current.secret_string
    finally:
        fn.stop()
