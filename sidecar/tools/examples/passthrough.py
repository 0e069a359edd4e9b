"""Passthrough: a minimal Iterum transformation step written with pyterum 0.6.6.

For every input fragment it copies each file to DATA_VOLUME_PATH/output/<fragment id>/
as "out_<name>", sends one output fragment naming the input as its predecessor, then
tells the sidecar it is done with the input. Run it next to the sidecar with the same
DATA_VOLUME_PATH, TRANSFORMATION_STEP_INPUT and TRANSFORMATION_STEP_OUTPUT.

If RECORD_FILE is set, it also writes what it received to that JSON file (for tests).
"""

import json
import os
import shutil
from typing import Any

from pyterum import (
    LocalFileDesc,
    LocalFragmentDesc,
    TransformationStepInput,
    TransformationStepOutput,
)

RECORD_FILE = os.environ.get("RECORD_FILE")
record: dict[str, Any] = {"script": "passthrough", "received": [], "done_with": [],
                          "done_sent": False}


def save_record() -> None:
    if RECORD_FILE:
        with open(RECORD_FILE + ".tmp", "w") as f:
            json.dump(record, f)
        os.replace(RECORD_FILE + ".tmp", RECORD_FILE)


def main() -> None:
    volume = os.environ["DATA_VOLUME_PATH"]
    ts_in = TransformationStepInput()
    ts_out = TransformationStepOutput()

    for msg in ts_in.consumer():
        if msg is None:  # the sidecar has no more input: finish and say so
            ts_out.produce_done()
            ts_out.close()
            record["done_sent"] = True
            save_record()
            break

        fragment_id = msg.metadata.fragment_id
        record["received"].append({
            "fragment_id": fragment_id,
            "custom": msg.metadata.custom,
            "files": [{"name": f.name, "path": f.path, "existed": os.path.isfile(f.path)}
                      for f in msg.files],
        })

        out_dir = os.path.join(volume, "output", fragment_id)
        outputs = []
        for file in msg.files:
            name = "out_" + file.name
            dest = os.path.join(out_dir, name)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copyfile(file.path, dest)
            outputs.append(LocalFileDesc(name=name, path=dest))

        if outputs:
            ts_out.produce(LocalFragmentDesc(files=outputs, predecessors=[fragment_id]))
        ts_out.done_with(msg)
        record["done_with"].append(fragment_id)
        save_record()


if __name__ == "__main__":
    main()
