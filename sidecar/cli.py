"""Command line: `iterum-sidecar` runs the sidecar from the environment, as a container does."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from . import __version__
from .shell import signals

# config (with pika and ssl: a few hundred milliseconds on a busy node) is imported where it
# is used: until run_from_environment installs the signal handlers a SIGTERM has the
# default action (status 143), so that moment comes as early as it can.

if TYPE_CHECKING:
    from .shell.config import Settings


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
    demo.add_argument("--s3-endpoint", metavar="URL",
                      help="use this S3 server (http://host:port or https://...) instead of "
                      "the embedded one; keys from MINIO_ACCESS_KEY and MINIO_SECRET_KEY (or "
                      "their _FILE variants), as the sidecar reads them")
    demo.add_argument("--keep-buckets", action="store_true",
                      help="with --s3-endpoint: keep the run's input and output buckets "
                      "(removed at the end by default, as its queues are)")
    commands.add_parser("config-reference",
                        help="print the configuration reference (docs/configuration.md)")
    _add_debugging_commands(commands)
    _add_dead_letter_command(commands)
    args = parser.parse_args(argv)
    if args.command == "config-reference":
        from .tools.reference import configuration_markdown

        print(configuration_markdown(), end="")
        return 0
    if args.command == "replay":
        from .tools.replay import run_replay

        return run_replay(args.journal, run=args.run, fragment=args.fragment or "",
                          limit=args.limit, quiet=args.quiet, step=args.step)
    if args.command == "graph":
        from .tools.graph import run_graph

        return run_graph(args.format, args.machine, args.out)
    if args.command == "dead-letters":
        from .tools.deadletters import run_dead_letters

        return run_dead_letters(args.action, args.id or [], args.reason,
                                getattr(args, "all", False), args.json)
    if args.command == "demo":
        from .tools.demo import run_demo

        return run_demo(args.fragments, args.broker, args.openlineage, args.s3_endpoint,
                        args.keep_buckets)
    return run_from_environment()


def _add_debugging_commands(commands: Any) -> None:
    """`replay` and `graph` (docs/debugging.md)."""
    replay = commands.add_parser(
        "replay", help="re-run the core offline on a recorded journal, check that it makes "
        "the same transitions and effects, print each fragment's timeline and a summary "
        "(exit 1 at the first divergence, 2 if the journal cannot be read)")
    replay.add_argument("journal", help="a journal directory (its newest run, e.g. "
                        "<volume>/.sidecar/journal) or one segment file")
    replay.add_argument("--run", type=int, help="replay this run of the directory instead")
    replay.add_argument("--step", action="store_true",
                        help="step through the run interactively (next, continue, break, "
                        "show, list, ...)")
    replay.add_argument("--fragment", metavar="ID",
                        help="only this fragment's lifecycle (an id prefix, or #serial)")
    replay.add_argument("--limit", type=int, default=50, metavar="N",
                        help="fragments shown in the timeline (default 50, 0 for all)")
    replay.add_argument("--quiet", "-q", action="store_true", help="no timeline")
    graph = commands.add_parser(
        "graph", help="draw the lifecycle state machines (Mermaid text; SVG/PNG with "
        "Graphviz); docs/lifecycle.md is `graph --format markdown`")
    graph.add_argument("--format", choices=("mermaid", "markdown", "svg", "png"),
                       default="mermaid")
    graph.add_argument("--machine", choices=("input", "output", "step", "intake", "all"),
                       help="one lifecycle (default: all; input for an image)")
    graph.add_argument("--out", metavar="PATH", help="write to PATH instead of stdout")


def _add_dead_letter_command(commands: Any) -> None:
    """`dead-letters list|requeue` (docs/reliability.md)."""
    dead = commands.add_parser(
        "dead-letters", help="list the dead letters of <MQ_INPUT_QUEUE>-dead, or requeue "
        "them to the input queue after a fix (broker settings from the environment)")
    actions = dead.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="print id, reason, time, attempts and error "
                                 "of each dead letter (nothing is consumed)")
    requeue = actions.add_parser("requeue", help="republish dead letters to the input "
                                 "queue (confirmed by the broker), then remove them")
    which = requeue.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", action="append", metavar="ID",
                       help="a dead letter's id or a prefix of it (repeatable)")
    which.add_argument("--all", action="store_true", help="every dead letter (that matches "
                       "--reason, if given)")
    listing.add_argument("--id", action="append", metavar="ID",
                         help="only this id or id prefix (repeatable)")
    for sub in (listing, requeue):
        sub.add_argument("--reason", metavar="REASON", help="only dead letters with this "
                         "reason (x-iterum-error-class), e.g. missing-object")
        sub.add_argument("--json", action="store_true", help="JSON lines instead of a table")


def run_from_environment() -> int:
    # Until the loop installs its own handlers nothing has been taken from the broker: a
    # SIGTERM (or Ctrl-C) during start-up simply ends the process with 0.
    signals.handle(signals.quiet_exit)
    code = _run()
    signals.hold_exit_code()  # decided: a signal during the teardown does not change it
    return code


def _run() -> int:
    from .shell import config

    try:
        settings = config.load()
    except config.ConfigError as err:
        print(f"iterum-sidecar: configuration error: {err}", file=sys.stderr)
        return 1
    setup_logging(settings.log_level, settings.log_format, secrets(settings))
    for notice in settings.notices:
        logging.getLogger("sidecar").warning("%s", notice)
    from .shell import cpus

    cpus.keep(settings.cpu_affinity)  # before any thread starts: they inherit it
    from .shell.operate import build

    try:
        return build(settings).run()
    except OSError as err:  # e.g. the sockets cannot be created on the volume
        logging.getLogger("sidecar").error("cannot start: %s", err)
        return 1


def setup_logging(level: str, fmt: str = "auto", secret_values: tuple[str, ...] = ()) -> None:
    from .shell.logs import setup

    setup(level, fmt, secret_values)


def secrets(settings: Settings) -> tuple[str, ...]:
    """The values no log line may contain (docs/operations.md)."""
    from .shell import config

    values = [getattr(settings, v.attr) for v in config.VARIABLES if v.secret]
    password = urlsplit(settings.mq_broker_url).password or ""
    values += [password, unquote(password)]
    return tuple(v for v in values if v)
