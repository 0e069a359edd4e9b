"""Hand-offs between the loop and the storage workers (docs/performance-history.md, fix 4):
posted events coalesced into one loop wake-up, in order; one work item per fragment's
transfers; deletions at once on the loop thread, in order, before any later transfer (fix 9,
deletions on the pool, was withdrawn)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from test_config import manager_env

from sidecar.core import effects as fx
from sidecar.core.events import QueueInspected, Tick
from sidecar.shell import config
from sidecar.shell.io.storage import Storage
from sidecar.shell.io.workers import WorkerPool
from sidecar.shell.loop import Runner


class FakeLoop:
    """Records add_callback_threadsafe; run() calls them as the loop would, in order."""

    def __init__(self) -> None:
        self.callbacks: list = []
        self.lock = threading.Lock()

    def add_callback_threadsafe(self, callback) -> None:
        with self.lock:
            self.callbacks.append(callback)

    def run(self) -> int:
        ran = 0
        while self.callbacks:
            with self.lock:
                callback = self.callbacks.pop(0)
            callback()
            ran += 1
        return ran


@pytest.fixture
def runner(tmp_path: Path):
    runner = Runner(config.load(manager_env(tmp_path)))  # constructs only: no I/O yet
    runner.ioloop.close()
    runner.storage.shutdown()
    runner.ioloop = FakeLoop()
    runner.fed = []
    runner.feed = runner.fed.append
    return runner


def test_posts_while_a_wake_up_is_pending_share_it_in_order(runner):
    events = [Tick() for _ in range(5)]
    for e in events:
        runner.post(e)
    assert len(runner.ioloop.callbacks) == 1
    assert runner.ioloop.run() == 1
    assert [id(e) for e in runner.fed] == [id(e) for e in events]
    assert (runner.posts, runner.wakeups) == (5, 1)
    runner.post(first := Tick())  # nothing pending any more: a new wake-up
    assert len(runner.ioloop.callbacks) == 1
    runner.ioloop.run()
    assert runner.fed[-1] is first


def test_events_posted_while_feeding_get_one_more_wake_up(runner):
    late = [Tick(), Tick()]

    def feed(event):
        runner.fed.append(event)
        if len(runner.fed) == 1:  # a worker posts while the loop handles the first batch
            for e in late:
                runner.post(e)

    runner.feed = feed
    runner.post(first := Tick())
    assert runner.ioloop.run() == 2
    assert [id(e) for e in runner.fed] == [id(e) for e in (first, *late)]
    assert runner.wakeups == 2 and not runner._posted_wake


def test_concurrent_posts_keep_each_threads_order_and_lose_nothing(runner):
    per_thread = 2000

    def worker(n: int) -> None:
        for i in range(per_thread):
            runner.post((n, i))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads) or runner.ioloop.callbacks:
        runner.ioloop.run()
    for t in threads:
        t.join()
    runner.ioloop.run()
    assert len(runner.fed) == 4 * per_thread
    for n in range(4):
        assert [i for m, i in runner.fed if m == n] == list(range(per_thread))
    assert runner.wakeups < runner.posts


def test_a_work_item_runs_its_calls_in_order_and_survives_a_failing_one():
    pool = WorkerPool(1, "test")
    done = threading.Event()
    seen: list[int] = []

    def fail(_n: int) -> None:
        raise RuntimeError("boom")

    pool.submit_all([(seen.append, (1,)), (fail, (2,)), (seen.append, (3,)),
                     (lambda: done.set(), ())])
    assert done.wait(5)
    pool.shutdown()
    assert seen == [1, 3]


def test_idle_workers_share_a_work_item():
    pool = WorkerPool(3, "test")
    together = threading.Barrier(3, timeout=5)  # broken unless three workers run at once
    done: list[str] = []

    def transfer() -> None:
        together.wait()
        done.append(threading.current_thread().name)

    pool.submit_all([(transfer, ())] * 3)
    deadline = time.monotonic() + 5
    while len(done) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    pool.shutdown()
    assert len(set(done)) == 3


def test_a_busy_pool_keeps_a_work_item_on_one_worker():
    pool = WorkerPool(2, "test")
    started, release, finished = threading.Event(), threading.Event(), threading.Event()
    ran: list[str] = []

    def block() -> None:
        started.set()
        release.wait(5)

    pool.submit(block)
    assert started.wait(5)  # one worker busy, the other idle until the item below
    pool.submit_all([(lambda: ran.append(threading.current_thread().name), ())] * 3
                    + [(finished.set, ()), (release.wait, (5,))])  # both workers held
    assert finished.wait(5)
    handed_on = pool._tasks.qsize()  # items put back for other workers: none were idle
    release.set()
    pool.shutdown()
    assert len(ran) == 3 and len(set(ran)) == 1 and handed_on == 0


class FakePool:
    def __init__(self) -> None:
        self.items: list[list] = []

    def submit(self, fn, *args) -> None:
        self.submit_all([(fn, args)])

    def submit_all(self, calls) -> None:
        self.items.append(calls)

    def run(self) -> None:
        while self.items:
            for fn, args in self.items.pop(0):
                fn(*args)

    def shutdown(self) -> None:
        self.items.clear()


@pytest.fixture
def storage(tmp_path: Path):
    storage = Storage(config.load(manager_env(tmp_path)), lambda _event: None)
    storage.pool.shutdown()
    storage.pool = FakePool()
    storage.done = []
    storage._download = storage._upload = lambda e, fragment="": storage.done.append(e)
    return storage


def _download(input_id: int, index: int, dest: str = "/nowhere") -> fx.DownloadFile:
    return fx.DownloadFile(input_id, index, "bucket", f"key{index}", dest)


def test_one_work_item_per_fragment_and_direction_after_the_event(storage):
    effects = [_download(1, 0), _download(2, 0), _download(1, 1),
               fx.UploadFile(1, 0, "out", "k", "/src"), _download(2, 1)]
    for e in effects:
        (storage.upload if isinstance(e, fx.UploadFile) else storage.download)(e)
    assert storage.pool.items == []  # nothing handed over before flush
    storage.flush()
    assert len(storage.pool.items) == 3
    storage.pool.run()
    assert storage.done == [effects[0], effects[2], effects[1], effects[4], effects[3]]
    storage.flush()
    assert storage.pool.items == []


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_transfer_never_meets_the_files_deleted_before_it(storage, tmp_path: Path):
    stale = tmp_path / "in" / "f"
    _write(stale, "old")
    storage.delete(fx.DeleteFiles((str(stale),), (str(stale.parent),)))
    assert not stale.parent.exists()  # done at once, before any later transfer is staged
    # the redelivered input, downloaded to the same path
    storage._download = lambda e, fragment="": _write(Path(e.dest), "new")
    storage.download(_download(1, 0, str(stale)))
    storage.flush()
    assert len(storage.pool.items) == 1  # the transfer only: no deletion on the pool
    storage.pool.run()
    assert stale.read_text() == "new"


def test_deletions_run_at_once_on_the_loop_thread_in_order(storage, tmp_path: Path):
    files = [tmp_path / f"f{i}" for i in range(3)]
    for f in files:
        _write(f, "x")
    storage.delete(fx.DeleteFiles((str(files[0]),)))
    assert not files[0].exists() and files[1].exists()
    storage.delete(fx.DeleteFiles((str(files[1]),), (str(tmp_path / "missing"),)))
    assert not files[1].exists() and files[2].exists()  # a missing directory is no error
    storage.delete(fx.DeleteFiles((str(files[2]),)))
    assert not files[2].exists()
    assert storage.pool.items == []  # nothing was queued for the workers


def test_deletions_before_and_after_shutdown_are_carried_out(storage, tmp_path: Path):
    pending, late = tmp_path / "a" / "f", tmp_path / "b"
    _write(pending, "x")
    _write(late, "x")
    storage.delete(fx.DeleteFiles((str(pending),), (str(pending.parent),)))
    storage.shutdown()
    assert not pending.parent.exists()
    storage.delete(fx.DeleteFiles((str(late),)))
    assert not late.exists()


class _TurnLoop:
    def at_turn_end(self, callback) -> None:
        pass


class _Core:
    """Hands out the effects given for each event; raises for the ones in ``failing``."""

    def __init__(self, effects: dict, failing: tuple = ()) -> None:
        self.effects, self.failing = effects, failing
        self.seen: list = []
        self.transitions: list = []

    def handle(self, event, now: float) -> list:
        self.seen.append(event)
        if event in self.failing:
            raise RuntimeError("a bug")
        return self.effects.get(event, [])


def _feeding(tmp_path: Path, core: _Core, caused: dict) -> Runner:
    """A Runner whose Ack(n) feeds ``caused[n]``, as a performer that makes an event."""
    runner = Runner(config.load(manager_env(tmp_path)), core=core)  # type: ignore[arg-type]
    runner.ioloop.close()
    runner.storage.shutdown()
    runner.ioloop = _TurnLoop()  # type: ignore[assignment]
    runner._performers[fx.Ack] = lambda e: runner.feed(caused[e.tag])
    return runner


def test_events_that_effects_cause_are_handled_after_the_current_one_in_order(tmp_path):
    a, b, c, d = (QueueInspected(i) for i in range(4))  # unequal events
    core = _Core({a: [fx.Ack(1), fx.Ack(2)], b: [fx.Ack(3)]})
    runner = _feeding(tmp_path, core, {1: b, 2: c, 3: d})
    runner.feed(a)
    assert core.seen == [a, b, c, d]
    assert not runner._busy and not runner._queue


def test_events_an_exception_left_queued_go_before_the_next_one(tmp_path):
    a, b, c, d = (QueueInspected(i) for i in range(4))  # unequal events
    core = _Core({a: [fx.Ack(1), fx.Ack(2)]}, failing=(b,))
    runner = _feeding(tmp_path, core, {1: b, 2: c})
    with pytest.raises(RuntimeError):
        runner.feed(a)
    assert core.seen == [a, b] and list(runner._queue) == [c]
    runner.feed(d)
    assert core.seen == [a, b, c, d]
