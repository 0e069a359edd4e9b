"""What a test transformation saw, written to $RECORD_FILE (record.json) in its cwd.

The file is rewritten atomically after every event, so a test can read it while the
script runs or after it was killed. Not part of pyterum: plain test plumbing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time

BIG = 64 * 1024  # custom values larger than this are recorded as size + sha256 only


def summarize(value):
    text = json.dumps(value, sort_keys=True)
    if len(text) <= BIG:
        return value
    return {"_bytes": len(text), "_sha256": hashlib.sha256(text.encode()).hexdigest()}


def file_info(path: str) -> dict:
    info = {"path": path, "existed": os.path.isfile(path)}
    if info["existed"]:
        with open(path, "rb") as f:
            data = f.read()
        info["size"] = len(data)
        info["sha256"] = hashlib.sha256(data).hexdigest()
    return info


class Recorder:
    def __init__(self, script: str):
        self.path = os.path.abspath(os.environ.get("RECORD_FILE") or "record.json")
        self.data = {"script": script, "pid": os.getpid(), "received": [], "produced": [],
                     "done_with": [], "kill_received": False, "done_sent": False, "notes": {}}
        self.save()

    def received(self, msg) -> None:
        meta = msg.metadata
        self.data["received"].append({
            "fragment_id": meta.fragment_id,
            "predecessors": meta.predecessors,
            "custom": summarize(getattr(meta, "custom", None)),
            "metadata_keys": sorted(vars(meta)),
            "files": [{"name": f.name, **file_info(f.path)} for f in msg.files],
            "time": time.time(),
        })
        self.save()

    def produced(self, frag) -> None:
        meta = frag.metadata
        self.data["produced"].append({
            "predecessors": list(meta.predecessors),
            "output_channel": meta.output_channel,
            "custom": summarize(meta.custom),
            "files": [{"name": f.name, "path": f.path} for f in frag.files],
        })
        self.save()

    def done_with(self, msg) -> None:
        self.data["done_with"].append(msg.metadata.fragment_id)
        self.save()

    def kill(self) -> None:
        self.data["kill_received"] = True
        self.save()

    def done(self) -> None:
        self.data["done_sent"] = True
        self.save()

    def note(self, key: str, value) -> None:
        self.data["notes"][key] = value
        self.save()

    def save(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f)
        os.replace(tmp, self.path)


def output_dir(fragment_id: str) -> str:
    """DATA_VOLUME_PATH/output/<fragment_id>/, created (the demo writes under output/)."""
    path = os.path.join(os.environ["DATA_VOLUME_PATH"], "output", fragment_id)
    os.makedirs(path, exist_ok=True)
    return path


def copy_to(src: str, directory: str, name: str) -> str:
    dest = os.path.join(directory, name)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.copyfile(src, dest)
    return dest
