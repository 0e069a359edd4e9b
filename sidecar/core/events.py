"""Everything the core consumes: plain, immutable records of what happened at the edges.

The shell creates them; the journal records them; replay feeds them back. Field types are
limited to str, int, float, bool, bytes and tuples of those, so they serialise to JSON.
"""

from __future__ import annotations

from dataclasses import dataclass


class Event:
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class BrokerReady(Event):
    """The input queue is declared and QoS set; consuming may start."""


@dataclass(frozen=True, slots=True)
class Delivered(Event):
    tag: int
    body: bytes
    redelivered: bool = False


@dataclass(frozen=True, slots=True)
class ConsumerStopped(Event):
    """Our basic.cancel completed: no more deliveries will arrive."""


@dataclass(frozen=True, slots=True)
class ConsumerCancelledByBroker(Event):
    """The broker cancelled the consumer (queue deleted, node down)."""


@dataclass(frozen=True, slots=True)
class BrokerLost(Event):
    """The connection (or one of its channels) is gone. Every delivery tag of it is void:
    the broker requeues those messages. ``retrying``: the adapter reconnects (BrokerReady
    follows); False: it gave up (SIDECAR_BROKER_RETRY_SECONDS spent)."""

    error: str
    retrying: bool = True


@dataclass(frozen=True, slots=True)
class QueueInspected(Event):
    ready: int


@dataclass(frozen=True, slots=True)
class PublishConfirmed(Event):
    publish_id: int


@dataclass(frozen=True, slots=True)
class PublishRejected(Event):
    publish_id: int
    reason: str  # "nack" or "returned: <reply text>"


@dataclass(frozen=True, slots=True)
class FileDownloaded(Event):
    input_id: int
    index: int
    size: int
    attempts: int = 1
    etag: str = ""  # the object's S3 ETag, for lineage (OpenLineage dataset version)
    sha256: str = ""  # of the bytes moved, hex (hashed as they streamed); "" in old journals


@dataclass(frozen=True, slots=True)
class DownloadFailed(Event):
    input_id: int
    index: int
    reason: str  # stable code: missing-object, storage-unavailable, ...
    error: str
    transient: bool
    attempts: int = 1


@dataclass(frozen=True, slots=True)
class FileUploaded(Event):
    output_id: int
    index: int
    size: int
    attempts: int = 1
    etag: str = ""  # the object's S3 ETag, for lineage (OpenLineage dataset version)
    sha256: str = ""  # of the bytes moved, hex (hashed as they streamed); "" in old journals


@dataclass(frozen=True, slots=True)
class UploadFailed(Event):
    output_id: int
    index: int
    reason: str
    error: str
    transient: bool
    attempts: int = 1


@dataclass(frozen=True, slots=True)
class Connected(Event):
    conn: int
    channel: str  # "tts" or "fts"


@dataclass(frozen=True, slots=True)
class Disconnected(Event):
    conn: int
    channel: str


@dataclass(frozen=True, slots=True)
class FrameReceived(Event):
    conn: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class FrameRejected(Event):
    """The connection's framing broke (oversized header); the frame was not read."""

    conn: int
    reason: str


@dataclass(frozen=True, slots=True)
class UpstreamFinished(Event):
    pass


@dataclass(frozen=True, slots=True)
class Fatal(Event):
    """A failure outside any fragment that ends the process (manager, config files, ...)."""

    reason: str
    error: str


@dataclass(frozen=True, slots=True)
class ShutdownRequested(Event):
    signal: str


@dataclass(frozen=True, slots=True)
class VolumeSpace(Event):
    """The shell measured the shared volume (statvfs), periodically."""

    free_bytes: int
    total_bytes: int


@dataclass(frozen=True, slots=True)
class Resume(Event):
    """Start-up on a volume whose previous sidecar was killed: what its journal says it had
    done (sidecar/shell/recovery.py). Fed once, before any other event."""

    run: int  # the journal run the knowledge was read from
    # (fragment id, sha256 of the body, ids of its outputs not yet recorded): inputs whose
    # done_with came and whose outputs are all in S3
    inputs: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    # (fragment id, "uploaded" or "published", queue, descriptor): those outputs
    outputs: tuple[tuple[str, str, str, str], ...] = ()
    delete: tuple[str, ...] = ()  # files the killed sidecar left that nothing will use
    delete_dirs: tuple[str, ...] = ()
    # (fragment id, files, dirs): inputs the transformation may still be reading; deleted
    # when the input stream ends, unless the input is delivered here again
    later: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class Tick(Event):
    """A deadline the core asked for (next_deadline) has passed."""
