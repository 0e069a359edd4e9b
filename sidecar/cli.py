"""Command line: `iterum-sidecar` runs the sidecar from the environment, as a container does."""

from __future__ import annotations

import argparse
import logging
import sys
from urllib.parse import unquote, urlsplit

from . import __version__, config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="iterum-sidecar",
        description="Iterum sidecar: moves fragments between RabbitMQ, S3 and a pyterum "
        "transformation. Without a command it runs from the environment (see docs/).")
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="run the sidecar from the environment (the default)")
    demo = commands.add_parser(
        "demo", help="run a local pipeline step: the local RabbitMQ, an embedded S3 "
        "endpoint and the bundled pyterum example transformation over sample input")
    demo.add_argument("--fragments", type=int, default=20, help="sample fragments to process")
    demo.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/%2F",
                      help="AMQP URL of the broker to use")
    demo.add_argument("--openlineage", metavar="FILE",
                      help="also write OpenLineage run events to FILE (JSON lines)")
    commands.add_parser("config-reference",
                        help="print the configuration reference (docs/configuration.md)")
    args = parser.parse_args(argv)
    if args.command == "config-reference":
        from .reference import configuration_markdown

        print(configuration_markdown(), end="")
        return 0
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(args.fragments, args.broker, args.openlineage)
    return run_from_environment()


def run_from_environment() -> int:
    try:
        settings = config.load()
    except config.ConfigError as err:
        print(f"iterum-sidecar: configuration error: {err}", file=sys.stderr)
        return 1
    setup_logging(settings.log_level, settings.log_format, secrets(settings))
    from .loop import Runner

    try:
        runner = Runner(settings)
        return runner.run()
    except OSError as err:  # e.g. the sockets cannot be created on the volume
        logging.getLogger("sidecar").error("cannot start: %s", err)
        return 1


def setup_logging(level: str, fmt: str = "auto", secret_values: tuple[str, ...] = ()) -> None:
    from .logs import setup

    setup(level, fmt, secret_values)


def secrets(settings: config.Settings) -> tuple[str, ...]:
    """The values no log line may contain (docs/operations.md)."""
    values = [getattr(settings, v.attr) for v in config.VARIABLES if v.secret]
    password = urlsplit(settings.mq_broker_url).password or ""
    values += [password, unquote(password)]
    return tuple(v for v in values if v)
