"""An S3 endpoint for the benchmark: moto's S3 backend behind a choice of WSGI servers.

    python -m bench.s3server [--server waitress] [--threads 16] [--port 0]

It runs in its own process (so that its CPU and its GIL are not the benchmark's) and
prints ``READY <port>`` on stdout once it accepts connections. A small middleware counts
the requests by S3 operation, except those whose User-Agent carries ``iterum-bench`` (the
benchmark's own setup and checks), and counts the TCP connections it saw, which tells
whether clients get keep-alive. ``GET /_bench/stats`` answers the counts as JSON and
``POST /_bench/reset`` zeroes them; neither is an S3 request.

moto's werkzeug server (its ``ThreadedMotoServer``) speaks HTTP/1.1 when threaded, but it
is the slowest choice here; ``python -m bench s3-servers`` measures them all (see
docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
import threading
import time
from collections import Counter
from typing import Any
from urllib.parse import parse_qs

from sidecar.shell.io.s3ops import operation

BENCH_AGENT = "iterum-bench"
SERVERS = ("werkzeug", "waitress", "cheroot", "granian", "granian-close")


class Counting:
    """WSGI middleware: counts S3 operations and client connections."""

    def __init__(self, app: Any):
        self.app = app
        self.lock = threading.Lock()
        self.ops: Counter[str] = Counter()
        self.connections: set[tuple[str, str]] = set()
        self.requests = 0

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"ops": dict(self.ops), "requests": self.requests,
                    "connections": len(self.connections)}

    def reset(self) -> None:
        with self.lock:
            self.ops.clear()
            self.connections.clear()
            self.requests = 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "/")
        if path.startswith("/_bench/"):
            if path == "/_bench/reset":
                self.reset()
            body = json.dumps(self.stats()).encode()
            start_response("200 OK", [("Content-Type", "application/json"),
                                      ("Content-Length", str(len(body)))])
            return [body]
        if BENCH_AGENT not in environ.get("HTTP_USER_AGENT", ""):
            bucket, _, key = path.lstrip("/").partition("/")
            query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
            op = operation(environ["REQUEST_METHOD"], bucket, key, query)
            peer = (str(environ.get("REMOTE_ADDR")), str(environ.get("REMOTE_PORT")))
            with self.lock:
                self.ops[op] += 1
                self.requests += 1
                self.connections.add(peer)
        return self.app(environ, start_response)


def make_app() -> Counting:
    from moto.server import create_backend_app

    # Only S3 is served: its Flask app directly, without moto's per-request dispatcher.
    return Counting(create_backend_app("s3"))


app: Any = None  # set for granian, which imports the application by name


def granian_app() -> Any:
    global app
    if app is None:
        app = make_app()
    return app


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def serve(server: str, host: str, port: int, threads: int) -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    if server == "werkzeug":
        from moto.moto_server.werkzeug_app import MotoRequestHandler
        from werkzeug.serving import make_server

        class Quiet(MotoRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:
                pass

        srv = make_server(host, port, make_app(), threaded=True, request_handler=Quiet)
        ready(srv.server_port)
        srv.serve_forever()
    elif server == "waitress":
        import waitress

        logging.getLogger("waitress").setLevel(logging.ERROR)
        srv = waitress.create_server(make_app(), host=host, port=port, threads=threads,
                                     connection_limit=1000, channel_timeout=600,
                                     # keep a 16 MiB part in memory, not in a temp file
                                     inbuf_overflow=64 << 20, outbuf_overflow=64 << 20,
                                     max_request_body_size=1 << 40)
        ready(srv.effective_port)
        srv.run()
    elif server == "cheroot":
        from cheroot import wsgi

        srv = wsgi.Server((host, port), make_app(), numthreads=threads,
                          max=-1, request_queue_size=1024, timeout=600)
        srv.prepare()
        ready(srv.bind_addr[1])
        srv.serve()
    elif server in ("granian", "granian-close"):
        from granian import Granian
        from granian.constants import Interfaces
        from granian.http import HTTP1Settings

        global app
        port = port or free_port(host)
        # Built before granian forks its worker, which inherits it: nothing is imported
        # after the fork (a thread importing at fork time would deadlock the worker).
        app = make_app()
        # one worker: moto's state lives in the process
        # granian-close: the same server closing every connection, as werkzeug does, at
        # granian's cost per request (tells closing apart from werkzeug's own CPU)
        closing = {"http1_settings": HTTP1Settings(keep_alive=False)} if server != "granian" else {}
        srv = Granian("bench.s3server:granian_app", address=host, port=port,
                      interface=Interfaces.WSGI, workers=1, blocking_threads=threads,
                      factory=True, log_enabled=False, **closing)
        threading.Thread(target=_announce_when_listening, args=(host, port),
                         daemon=True).start()
        srv.serve()
    else:
        raise SystemExit(f"unknown server {server!r}; one of {', '.join(SERVERS)}")


def _announce_when_listening(host: str, port: int) -> None:
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    ready(port)


def ready(port: int) -> None:
    print(f"READY {port}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.s3server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", choices=SERVERS, default="waitress")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args(argv)
    try:
        serve(args.server, args.host, args.port, args.threads)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
