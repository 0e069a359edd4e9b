"""The sidecar's decisions: events in, state-machine transitions, effects out. No I/O.

``Core.handle(event, now)`` is the only entry point. It is deterministic: the same events
with the same clock readings give the same transitions and the same effects, which is what
makes a recorded journal replayable. Every rule of the contract that is about *when*
something may happen (ack gating §16.8, the kill after the last fragment §12, giving work
back on a crash §16.5) lives here; the shell only moves bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import events as ev
from .broker import BrokerRules
from .inputs import InputRules
from .intake import IntakeRules
from .models import (
    EXIT_FATAL,
    EXIT_OK,
    EXIT_TRANSFORMATION,
    KILL_FRAME,
    OUTPUT_INDEX_LIMIT,
    CoreConfig,
    Input,
    Output,
    PendingPublish,
    Tracked,
    Transition,
)
from .outputs import OutputRules
from .resume import ResumeRules
from .stream import StreamRules
from .transformation import TransformationRules

__all__ = ["EXIT_FATAL", "EXIT_OK", "EXIT_TRANSFORMATION", "KILL_FRAME", "OUTPUT_INDEX_LIMIT",
           "Core", "CoreConfig", "Input", "Output", "PendingPublish", "Tracked", "Transition"]


class Core(BrokerRules, IntakeRules, InputRules, TransformationRules, OutputRules,
           StreamRules, ResumeRules):
    """The decisions of one sidecar process; every event type maps to one rule."""

    def __init__(self, config: CoreConfig):
        super().__init__(config)
        self._handlers: dict[type, Callable[[Any], None]] = {
            ev.BrokerReady: self._on_broker_ready,
            ev.Delivered: self._on_delivered,
            ev.ConsumerStopped: self._on_consumer_stopped,
            ev.ConsumerCancelledByBroker: self._on_consumer_cancelled,
            ev.BrokerLost: self._on_broker_lost,
            ev.QueueInspected: self._on_queue_inspected,
            ev.PublishConfirmed: self._on_confirmed,
            ev.PublishRejected: self._on_rejected,
            ev.FileDownloaded: self._on_downloaded,
            ev.DownloadFailed: self._on_download_failed,
            ev.FileUploaded: self._on_uploaded,
            ev.UploadFailed: self._on_upload_failed,
            ev.Connected: self._on_connected,
            ev.Disconnected: self._on_disconnected,
            ev.FrameReceived: self._on_frame,
            ev.FrameRejected: self._on_frame_rejected,
            ev.UpstreamFinished: self._on_upstream_finished,
            ev.Fatal: self._on_fatal,
            ev.ShutdownRequested: self._on_shutdown,
            ev.Tick: self._on_tick,
            ev.VolumeSpace: self._on_volume_space,
            ev.Resume: self._on_resume,
        }
