"""The /metrics exposition, sample by sample, must not change: dashboards and alerts read it.

``scenario`` drives the metrics observer and the adapters' hooks through one run that
touches every metric (fragments in both lifecycles, times in every histogram range, a
redelivery, a dead letter, a stuck fragment, a paused intake, S3 requests, transfers,
retries, confirms, a refused connection). ``metrics_exposition.txt`` is the text
prometheus_client's own Counter and Histogram objects produced for it (main ``bcb1da6``,
before the per-fragment metrics became dict tallies collected at scrape time); the
``_created`` timestamps are the only values that differ between runs, so they are masked.

To write it again after a deliberate change of the metrics:
``python tests/unit/test_metrics_exposition.py > tests/unit/metrics_exposition.txt``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from prometheus_client import generate_latest
from test_metrics import Observed
from unit_driver import fid, of, remote_body

from sidecar.core import effects as fx
from sidecar.core import events as ev
from sidecar.shell.metrics import AdapterMetrics

GOLDEN = Path(__file__).with_name("metrics_exposition.txt")
CREATED = re.compile(r"^(\S+_created(?:\{.*\})?) \S+$", re.MULTILINE)
# durations that fall in (or on the bound of) different buckets of both bucket sets
WAITS = (0.0005, 0.001, 0.004, 0.005, 0.03, 0.3, 2.5, 7.0, 45.0, 650.0, 4000.0)


def run_fragment(drv: Observed, tag: int, fragment_id: str, wait: float) -> None:
    drv.deliver_fragment(tag, fragment_id)
    drv.after(wait, ev.FileDownloaded(drv.inputs[fragment_id].serial, 0, size=100))
    uploads = drv.output([fragment_id])
    drv.after(wait / 2)
    drv.done(fragment_id)
    for upload in of(uploads, fx.UploadFile):
        drv.after(wait / 3, ev.FileUploaded(upload.output_id, upload.index, size=10))
        for publish in of(drv.journal[-1][2], fx.Publish):
            step = drv.confirm(publish)
            for lineage in of(step, fx.Publish):
                drv.after(wait, ev.PublishConfirmed(lineage.publish_id))


def hooks_calls(hooks: AdapterMetrics) -> None:
    for i, wait in enumerate(WAITS):
        hooks.request("GetObject", "200", wait)
        hooks.request("PutObject", ("200", "503", "error")[i % 3], wait)
        hooks.transfer("download", 1000 + i, wait)
        hooks.transfer("upload", 0 if i % 4 == 0 else 10 * i, wait * 2)
        hooks.on_confirm(("ack", "nack", "returned")[i % 3], wait)
    hooks.request("GetObject", "404", 0.01)
    hooks.retry("download")
    hooks.retry("manager")
    hooks.on_refused("tts")


def scenario() -> Observed:
    """One run touching every metric; the registry afterwards is what is compared."""
    drv = Observed(stuck_after=100.0, volume_min_free=100)
    drv.metrics.describe_step("h-step")
    drv.start()
    drv.connect()
    for i, wait in enumerate(WAITS):
        run_fragment(drv, i + 1, fid("0123456789abcdef"[i]), wait)
    drv.deliver(90, remote_body(fid("r")), redelivered=True)
    drv.deliver(91, b"not json")
    for publish in of(drv.journal[-1][2], fx.Publish):
        drv.confirm(publish)
    drv.after(150.0)  # the redelivered input is stuck now
    drv.feed(ev.VolumeSpace(50, 1000))
    drv.disconnect()
    drv.metrics.openlineage.labels("emitted").inc()
    hooks_calls(AdapterMetrics(drv.metrics))
    return drv


def exposition(drv: Observed) -> str:
    text = generate_latest(drv.metrics.registry).decode()
    return CREATED.sub(r"\1 <created>", text)


def test_the_exposition_is_what_prometheus_client_metrics_showed() -> None:
    assert exposition(scenario()) == GOLDEN.read_text()


if __name__ == "__main__":
    sys.stdout.write(exposition(scenario()))
