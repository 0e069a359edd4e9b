"""Fixtures for the integration tests (see harness/ for the APIs).

Session: `rabbitmq_url` (fails the run if RabbitMQ is down), `s3_server` (moto, or Ceph
RGW with `--s3=rgw`; tests/conftest.py has the option).
Per test: `s3` (the session server, records and faults reset), `rabbit`, `fake_manager`,
`amqp_proxy`, `pipeline`. Every test in this directory is marked `integration`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import AmqpProxy, FakeManager, Pipeline, Proc, Rabbit, S3Server
from .harness.rabbit import DEFAULT_URL, require_rabbitmq
from .harness.rgw import RgwUnavailable, start_rgw

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    """On a failure, add the tail of every process the test's pipeline started."""
    report = (yield).get_result()
    pipe = getattr(item, "funcargs", {}).get("pipeline")
    if report.failed and isinstance(pipe, Pipeline) and pipe.procs:
        report.sections.append(("iterum processes", "\n".join(p.tail() for p in pipe.procs)))


@pytest.fixture(scope="session", autouse=True)
def _kill_leftover_processes():
    yield
    Proc.kill_all()  # only processes the harness started, by their own pid/group


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    require_rabbitmq(DEFAULT_URL)
    return DEFAULT_URL


@pytest.fixture(scope="session")
def s3_server(request: pytest.FixtureRequest):
    """moto, or with `--s3=rgw` a Ceph RGW started once for the session (and destroyed at
    its end) behind the same recording and faulting layer. RGW not starting fails the test."""
    if request.config.getoption("--s3") != "rgw":
        server = S3Server()
        yield server
        server.stop()
        return
    try:
        rgw = start_rgw()
    except RgwUnavailable as err:
        pytest.fail(str(err), pytrace=False)
    try:
        server = S3Server(upstream=rgw)
        yield server
        server.stop()
    finally:
        rgw.destroy()


@pytest.fixture
def s3(s3_server: S3Server):
    s3_server.reset()
    yield s3_server
    s3_server.reset()  # also releases stalled requests


@pytest.fixture
def rabbit(rabbitmq_url: str):
    helper = Rabbit(rabbitmq_url)
    yield helper
    helper.close()  # deletes the queues it declared or tracked


@pytest.fixture
def fake_manager():
    manager = FakeManager()
    yield manager
    manager.stop()


@pytest.fixture
def amqp_proxy(rabbitmq_url: str):
    proxy = AmqpProxy()
    yield proxy
    proxy.close()


@pytest.fixture
def pipeline(tmp_path: Path, s3: S3Server, rabbit: Rabbit, fake_manager: FakeManager):
    pipe = Pipeline(tmp_path, s3, rabbit, fake_manager)
    yield pipe
    pipe.cleanup()  # kills its processes, removes its buckets; `rabbit` deletes the queues
