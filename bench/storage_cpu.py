"""The storage threads' CPU per 1 KiB 1→1 fragment: one GET and one PUT through ``Storage``.

    python -m bench.s3server --server granian --port 39101 &   # keep-alive
    python -m bench.s3server --server werkzeug --port 39103 &  # closes every connection
    python bench/storage_cpu.py --repo . --port 39101 --n 300 --repeat 3

The real adapter (``Storage._download`` then ``Storage._upload``, the direct S3 path, the
integrity checks, the file on the volume) one fragment after another on this thread, so
``time.thread_time`` is the storage worker's CPU and nothing else's: no loop, no broker, no
transformation. ``--repo`` picks the tree (a base worktree beside the branch: run both,
alternating, in one session). Under valgrind the count of instructions is independent of
the machine's load: ``(Ir(n=250) - Ir(n=50)) / 200`` with

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python bench/storage_cpu.py --repo . --port 39101 --n N --repeat 1
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from types import SimpleNamespace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=".")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, os.path.abspath(args.repo))
    import minio

    from sidecar.core.effects import DownloadFile, UploadFile
    from sidecar.shell.io.storage import Storage

    url = f"127.0.0.1:{args.port}"
    settings = SimpleNamespace(
        data_volume_path=tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None),
        storage_timeout=60, minio_url=url, storage_workers=1, minio_use_ssl=False,
        s3_ca_file="", minio_access_key="bench", minio_secret_key="benchbench",
        s3_region="us-east-1", part_size=16 << 20, storage_attempts=3, storage_backoff_max=1,
        minio_output_bucket="out", s3_small_objects="direct")
    client = minio.Minio(url, "bench", "benchbench", secure=False, region="us-east-1")
    for bucket in ("inp", "out"):
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
    for i in range(50):
        client.put_object("inp", f"k{i}", io.BytesIO(b"x" * 1024), 1024)
    posted: list[object] = []
    storage = Storage(settings, posted.append)
    assert storage.direct is not None
    volume = storage.volume

    def fragment(i: int) -> None:
        dest = os.path.join(volume, f"f{i}", "in", "k")
        storage._download(DownloadFile(i, 0, "inp", f"k{i % 50}", dest))
        storage._upload(UploadFile(i, 0, "out", f"o/{i}", dest))
        os.remove(dest)
        os.rmdir(os.path.dirname(dest))
        os.rmdir(os.path.dirname(os.path.dirname(dest)))

    for i in range(20):  # connections open, bucket checked
        fragment(i)
    runs = []
    for _ in range(args.repeat):
        started = time.thread_time()
        for i in range(args.n):
            fragment(i)
        runs.append((time.thread_time() - started) / args.n * 1e6)
    failed = [p for p in posted if type(p).__name__ not in ("FileDownloaded", "FileUploaded")]
    assert not failed, failed[:3]
    print(f"{os.path.abspath(args.repo)}: µs CPU per GET+PUT: min {min(runs):.0f} "
          f"all {[round(r) for r in runs]} (load {os.getloadavg()[0]:.2f})")
    storage.shutdown()


if __name__ == "__main__":
    main()
