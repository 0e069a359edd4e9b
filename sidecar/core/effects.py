"""Everything the core asks the shell to do. The core never performs I/O itself."""

from __future__ import annotations

from dataclasses import dataclass


class Effect:
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class StartConsuming(Effect):
    prefetch: int


@dataclass(frozen=True, slots=True)
class StopConsuming(Effect):
    pass


@dataclass(frozen=True, slots=True)
class InspectQueue(Effect):
    pass


@dataclass(frozen=True, slots=True)
class Ack(Effect):
    tag: int


@dataclass(frozen=True, slots=True)
class Nack(Effect):
    tag: int
    requeue: bool = True


@dataclass(frozen=True, slots=True)
class Publish(Effect):
    publish_id: int
    queue: str
    body: bytes
    message_id: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class DownloadFile(Effect):
    input_id: int
    index: int
    bucket: str
    key: str
    dest: str


@dataclass(frozen=True, slots=True)
class UploadFile(Effect):
    output_id: int
    index: int
    bucket: str
    key: str
    source: str


@dataclass(frozen=True, slots=True)
class SendFrame(Effect):
    conn: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class CloseConnection(Effect):
    conn: int


@dataclass(frozen=True, slots=True)
class DeleteFiles(Effect):
    """Remove these files, then these directories if they are empty."""

    paths: tuple[str, ...]
    dirs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Log(Effect):
    """Something an operator should see. ``code`` is stable, for counters and searching."""

    level: str  # "info", "warning", "error"
    code: str
    message: str
    fragment: str = ""


@dataclass(frozen=True, slots=True)
class Exit(Effect):
    code: int
    reason: str
