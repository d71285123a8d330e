"""WatchSecrets over the AWS-protocol endpoint (issue 14): a long poll over the same stream.

AWS's JSON protocol answers each request once, so the change stream is served as a poll: the request carries
the last answer's ``ResumeToken`` (and the stream's filters); the answer holds the changes committed after it,
waiting up to ``WaitTimeSeconds`` for the first one. The stream itself is the gRPC method's
(:class:`~coffer.gateway.servicer.Operation` ``.stream``): the same authorization (``secretsmanager:
WatchSecrets``, then DescribeSecret per event), the same audit (one event per call), the same resume and
resync rules. A poll is one call: it opens the stream at the token, collects what comes, and closes it.

Once a change has arrived the poll lingers ``LINGER_SECONDS`` for the rest of a burst (a rotation's
events, a batch of puts) rather than answering each change with its own round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from coffer.api.secrets.v1 import secrets_pb2 as pb
from coffer.core import changes, errors
from coffer.gateway.servicer import Operation

#: The X-Amz-Target served as a long poll → the gRPC method whose stream it reads.
LONG_POLLS: Final = {
    "secretsmanager.WatchSecrets": "/coffer.api.secrets.v1.SecretsManagerService/WatchSecrets",
}
REQUEST_CLASS: Final = pb.WatchSecretsPollRequest

DEFAULT_WAIT_SECONDS: Final = 20
MAX_WAIT_SECONDS: Final = 20
DEFAULT_MAX_EVENTS: Final = 100
MAX_EVENTS: Final = 100
LINGER_SECONDS: Final = 0.05


def _bounded(request: pb.WatchSecretsPollRequest) -> tuple[int, int]:
    wait = request.wait_time_seconds if request.HasField("wait_time_seconds") else DEFAULT_WAIT_SECONDS
    if not 0 <= wait <= MAX_WAIT_SECONDS:
        raise errors.InvalidParameter(
            f"WaitTimeSeconds must be between 0 and {MAX_WAIT_SECONDS}; you gave {wait}."
        )
    most = request.max_events if request.HasField("max_events") else DEFAULT_MAX_EVENTS
    if not 1 <= most <= MAX_EVENTS:
        raise errors.InvalidParameter(f"MaxEvents must be between 1 and {MAX_EVENTS}; you gave {most}.")
    return wait, most


async def poll(operation: Operation, request: pb.WatchSecretsPollRequest) -> pb.WatchSecretsPollResponse:
    """Answer one poll through ``operation``'s stream (see the module docstring)."""
    stream_of = operation.stream
    if stream_of is None:
        raise TypeError(f"{operation.full_name} is not a stream")
    wait, most = _bounded(request)
    watch = pb.WatchSecretsRequest(secret_ids=request.secret_ids)
    if request.HasField("resume_token"):
        watch.resume_token = request.resume_token
    if request.HasField("name_prefix"):
        watch.name_prefix = request.name_prefix
    # The stream runs whole in one task of its own (it binds and unbinds context as it goes), handing its
    # events over; the poll waits on the queue, never inside the stream, and cancels the task when done.
    queue: asyncio.Queue[pb.SecretChangeEvent | Exception | None] = asyncio.Queue(maxsize=MAX_EVENTS)

    async def read() -> None:
        try:
            async with contextlib.aclosing(stream_of(watch, None)) as stream:
                async for event in stream:
                    await queue.put(event)
        except Exception as exc:
            await queue.put(exc)
        else:
            await queue.put(None)

    answer = pb.WatchSecretsPollResponse(resume_token=request.resume_token)
    loop = asyncio.get_running_loop()
    reader = loop.create_task(read(), name="aws-watch-poll")
    try:
        item = await queue.get()  # the opening Heartbeat, or the refusal
        # WaitTimeSeconds 0 still gives a backlog already committed the moment to arrive
        deadline = loop.time() + max(wait, LINGER_SECONDS)
        while item is not None:
            if isinstance(item, Exception):
                raise item
            answer.resume_token = item.resume_token
            if item.kind != changes.HEARTBEAT:
                answer.events.append(item)
                if len(answer.events) >= most:
                    break
                deadline = min(deadline, loop.time() + LINGER_SECONDS)
            left = deadline - loop.time()
            if left <= 0:
                if queue.empty():
                    break
                item = queue.get_nowait()
                continue
            try:
                item = await asyncio.wait_for(queue.get(), left)
            except TimeoutError:
                break
    finally:
        reader.cancel()
        await asyncio.wait({reader})  # its end (never its error: ours propagates, a cancellation of us too)
    return answer
