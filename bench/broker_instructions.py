"""Instructions per 1→1 fragment of the AMQP adapter (sidecar/shell/io/amqp.py and its
queues) and pika, counted by callgrind against the local RabbitMQ.

    python bench/broker_instructions.py [--small 300] [--large 1500] [--prefetch 16]
                                        [--repo DIR] [--url URL] [--rounds 1]
    python bench/broker_instructions.py --profile [--large 3000]   # cProfile, no valgrind
    python bench/broker_instructions.py --cpu [--rounds 3]  # user + system CPU, no valgrind

A real ``Broker`` on pika's ``IOLoop`` consumes a pre-filled input queue; a stand-in for the
core does what the core does per 1→1 fragment: on a delivery it publishes the output
description (message id = the fragment), on its confirm the lineage message, and on that
confirm it acks the delivery. So each fragment is one delivery + one ack + two confirmed
publishes, as in a run. The process runs twice under ``valgrind --tool=callgrind`` (``--small``
and ``--large`` fragments); the difference of the instruction totals divided by the
difference of the fragment counts is the cost of one fragment, without start-up. The
queues are filled beforehand from this (unmeasured) process and deleted afterwards.
``--repo``: measure another checkout's code (a worktree of the commit before a change).
Under valgrind the client is ~50 times slower, so the broker batches more frames per read
than in a run: compare trees with the same options, not with the whole-run figures.
Needs valgrind and RabbitMQ. Measures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
from pathlib import Path

from instructions import collected

HERE = Path(__file__).resolve().parent
URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
BODY = b'{"fragment_id":"%08d","files":[{"name":"a.bin","bucket":"in","path":"x/a.bin"}]}'
PROGRAM = """
import sys
sys.path[:0] = [{repo!r}]
from pika.adapters.select_connection import IOLoop
from sidecar.core import events as ev
from sidecar.shell.io.amqp import Broker

url, prefix, n, prefetch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
inq, outq, lineq = prefix + "-in", prefix + "-out", prefix + "-lineage"
ioloop = IOLoop()
ids = iter(range(1, 1 << 40))
waiting = {{}}  # publish id -> (delivery tag, message id, descriptor or None)
done = [0]
broker = None

def post(e):
    kind = type(e)
    if kind is ev.Delivered:
        pid, mid = next(ids), e.body[16:24].decode()
        waiting[pid] = (e.tag, mid, e.body)
        broker.publish(pid, outq, e.body, mid, ())
    elif kind is ev.PublishConfirmed:
        tag, mid, descriptor = waiting.pop(e.publish_id)
        if descriptor is not None:
            pid = next(ids)
            waiting[pid] = (tag, mid, None)
            broker.publish(pid, lineq, b'{{"eventType":"COMPLETE","run":"' + descriptor
                           + b'"}}', mid, ())
            return
        broker.ack(tag)
        done[0] += 1
        if done[0] == n:
            broker.close(on_closed=ioloop.stop)
    elif kind is ev.BrokerReady:
        broker.start_consuming(prefetch)
    elif kind in (ev.BrokerLost, ev.PublishRejected):
        raise SystemExit(repr(e))

broker = Broker(url, ioloop, post, inq, predeclare=(outq, lineq), retry_seconds=5)
broker.connect(0.0)
ioloop.call_later(600, ioloop.stop)
ioloop.start()
if done[0] != n:
    raise SystemExit(f"{{done[0]}} of {{n}} fragments")
"""


def _admin(url: str, prefix: str, fill: int) -> None:
    """Delete the bench's queues; with ``fill``, declare the input queue and fill it."""
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    for suffix in ("-in", "-out", "-lineage"):
        ch.queue_delete(prefix + suffix)
    if fill:
        ch.queue_declare(prefix + "-in", durable=False, auto_delete=False, exclusive=False)
        props = pika.BasicProperties(content_type="application/json", delivery_mode=2)
        for i in range(fill):
            ch.basic_publish("", prefix + "-in", BODY % i, props)
    conn.close()


def run(repo: Path, url: str, fragments: int, prefetch: int, valgrind: bool) -> int:
    """Instructions (callgrind), or with ``valgrind=False`` a cProfile listing."""
    prefix = f"bench-broker-{os.getpid()}-{fragments}"
    _admin(url, prefix, fragments)
    program = PROGRAM.format(repo=str(repo))
    try:
        if not valgrind:
            subprocess.run([sys.executable, "-c",
                            "import cProfile, pstats, sys; sys.argv[0] = 'p'; "
                            f"cProfile.run({program!r}, '/tmp/broker.prof'); "
                            "pstats.Stats('/tmp/broker.prof').sort_stats('tottime')"
                            ".print_stats(35)",
                            url, prefix, str(fragments), str(prefetch)], check=True)
            return 0
        return collected(program, url, prefix, str(fragments), str(prefetch))
    finally:
        _admin(url, prefix, 0)


def cpu(repo: Path, url: str, fragments: int, prefetch: int) -> float:
    """CPU seconds (user + system, so the kernel's side of the sends too) of one run."""
    prefix = f"bench-broker-{os.getpid()}-{fragments}"
    _admin(url, prefix, fragments)
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-c", PROGRAM.format(repo=str(repo)), url, prefix,
                        str(fragments), str(prefetch)], check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    finally:
        _admin(url, prefix, 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=300)
    parser.add_argument("--large", type=int, default=1500)
    parser.add_argument("--prefetch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--repo", type=Path, default=HERE.parent)
    parser.add_argument("--url", default=URL)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--cpu", action="store_true",
                        help="CPU time (user + system) instead of instructions: load-dependent")
    args = parser.parse_args()
    if args.profile:
        return run(args.repo, args.url, args.large, args.prefetch, valgrind=False)
    if args.cpu:
        for _ in range(args.rounds):
            small = cpu(args.repo, args.url, args.small, args.prefetch)
            large = cpu(args.repo, args.url, args.large, args.prefetch)
            print(f"  CPU per fragment {(large - small) / (args.large - args.small) * 1e6:6.1f} us",
                  flush=True)
        return 0
    print(f"instructions per 1→1 fragment (delivery + ack + 2 confirmed publishes; "
          f"{args.large} - {args.small} fragments, prefetch {args.prefetch}), "
          f"code in {args.repo}:")
    for _ in range(args.rounds):
        small = run(args.repo, args.url, args.small, args.prefetch, valgrind=True)
        large = run(args.repo, args.url, args.large, args.prefetch, valgrind=True)
        print(f"  adapter + pika {(large - small) / (args.large - args.small) / 1000:8.1f} k",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
