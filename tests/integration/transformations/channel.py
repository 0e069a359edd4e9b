"""1→K with metadata.output_channel: one output per entry of $OUTPUT_CHANNELS
(comma-separated; an empty entry or "-" means no output_channel, i.e. the default queue).
The input's custom["channels"] (a list) overrides the variable. Files: "<channel>_<name>".
"""

import os

from _record import Recorder, copy_to, output_dir
from pyterum import (
    LocalFileDesc,
    LocalFragmentDesc,
    TransformationStepInput,
    TransformationStepOutput,
)


def channels_for(msg) -> list:
    custom = msg.metadata.custom
    if isinstance(custom, dict) and isinstance(custom.get("channels"), list):
        entries = custom["channels"]
    else:
        entries = os.environ.get("OUTPUT_CHANNELS", "").split(",")
    return [None if e in ("", "-", None) else e for e in entries]


def main() -> None:
    rec = Recorder("channel")
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
        fid = msg.metadata.fragment_id
        for channel in channels_for(msg):
            prefix = channel or "default"
            files = [LocalFileDesc(name=f"{prefix}_{f.name}",
                                   path=copy_to(f.path, output_dir(fid), f"{prefix}_{f.name}"))
                     for f in msg.files]
            out = LocalFragmentDesc(files=files, predecessors=[fid])
            out.metadata.output_channel = channel
            ts_out.produce(out)
            rec.produced(out)
        ts_out.done_with(msg)
        rec.done_with(msg)


if __name__ == "__main__":
    main()
