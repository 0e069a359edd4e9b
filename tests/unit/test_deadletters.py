"""`iterum-sidecar dead-letters`: ids, selection and the broker-only settings (the command
itself runs against the real broker in tests/integration/test_reliability_bad_input.py)."""

from __future__ import annotations

import io
from pathlib import Path

import pika
import pytest
from test_config import BROKER_PASSWORD, manager_env

from sidecar.shell import config
from sidecar.tools.deadletters import DeadLetter, matches, run_dead_letters

FID = "a" * 64


def letter(message_id: str | None = FID, reason: str = "missing-object",
           body: bytes = b"{}") -> DeadLetter:
    props = pika.BasicProperties(message_id=message_id,
                                 headers={"x-iterum-error-class": reason})
    return DeadLetter(1, body, props, False)


def test_the_id_is_the_fragment_id_or_a_body_hash() -> None:
    assert letter().id == FID
    anonymous = letter(None, body=b"not json")
    assert anonymous.id.startswith("body:") and len(anonymous.id) == 21
    assert anonymous.id == letter(None, body=b"not json").id  # stable


def test_selection_by_id_prefix_and_reason() -> None:
    d = letter()
    assert matches(d, [], None)
    assert matches(d, ["aaaa"], None) and matches(d, ["zz", FID], "missing-object")
    assert not matches(d, ["b"], None)
    assert not matches(d, [], "invalid-json")


def test_broker_settings_alone_are_enough(tmp_path: Path) -> None:
    env = {"MQ_BROKER_URL": "amqp://u:p@rabbit:5672/%2F", "MQ_INPUT_QUEUE": "h-in"}
    s = config.load_broker(env)
    assert s.dead_letter_queue == "h-in-dead"
    url_file = tmp_path / "url"
    url_file.write_text("amqp://u:p@other:5672/%2F\n")
    s = config.load_broker({"MQ_BROKER_URL_FILE": str(url_file), "MQ_INPUT_QUEUE": "q"})
    assert s.mq_broker_url == "amqp://u:p@other:5672/%2F"


@pytest.mark.parametrize("missing", ["MQ_BROKER_URL", "MQ_INPUT_QUEUE"])
def test_configuration_errors_exit_1_without_the_password(tmp_path: Path,
                                                          missing: str) -> None:
    env = manager_env(tmp_path)
    env.pop(missing)
    out, err = io.StringIO(), io.StringIO()
    assert run_dead_letters("list", [], None, False, False, out, err, env) == 1
    assert missing in err.getvalue() and BROKER_PASSWORD not in err.getvalue()
    assert out.getvalue() == ""


def test_an_unreachable_broker_is_one_line_without_the_password(tmp_path: Path) -> None:
    env = {"MQ_BROKER_URL": f"amqp://iterum:{BROKER_PASSWORD}@127.0.0.1:9/%2F",
           "MQ_INPUT_QUEUE": "q"}
    out, err = io.StringIO(), io.StringIO()
    assert run_dead_letters("list", [], None, False, False, out, err, env) == 1
    assert err.getvalue().count("\n") == 1 and "broker error" in err.getvalue()
    assert BROKER_PASSWORD not in err.getvalue()
