"""1→1 with a large metadata.custom, to exercise frames well over 64 KiB.

Each output carries custom {"blob": <$BIG_BYTES characters, default 1.5 MiB>, "sha256": ...}.
The record notes the size of each input's custom (custom_bytes) and whether it was over
1 MiB; with $REQUIRE_BIG_INPUT=1 the script exits 3 at the end if some input's was not.
"""

import hashlib
import json
import os
import sys

from _record import Recorder, copy_to, output_dir
from pyterum import (
    LocalFileDesc,
    LocalFragmentDesc,
    TransformationStepInput,
    TransformationStepOutput,
)

MIB = 1 << 20


def main() -> None:
    rec = Recorder("big_message")
    size = int(os.environ.get("BIG_BYTES", str(MIB + MIB // 2)))
    require = os.environ.get("REQUIRE_BIG_INPUT") == "1"
    sizes = []
    ts_in = TransformationStepInput()
    ts_out = TransformationStepOutput()

    for msg in ts_in.consumer():
        if msg is None:
            rec.kill()
            ts_out.produce_done()
            ts_out.close()
            rec.done()
            break
        rec.received(msg)
        sizes.append(len(json.dumps(msg.metadata.custom)))
        rec.note("custom_bytes", sizes)
        rec.note("all_inputs_over_1mib", all(s > MIB for s in sizes))
        fid = msg.metadata.fragment_id
        blob = (fid * (size // len(fid) + 1))[:size]
        files = [LocalFileDesc(name=f"big_{f.name}",
                               path=copy_to(f.path, output_dir(fid), f"big_{f.name}"))
                 for f in msg.files]
        out = LocalFragmentDesc(files=files, predecessors=[fid])
        out.metadata.custom = {"blob": blob, "sha256": hashlib.sha256(blob.encode()).hexdigest()}
        ts_out.produce(out)
        rec.produced(out)
        ts_out.done_with(msg)
        rec.done_with(msg)

    if require and not all(s > MIB for s in sizes):
        sys.exit(3)


if __name__ == "__main__":
    main()
