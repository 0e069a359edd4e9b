"""The benchmark's pass-through transformation (pyterum 0.6.6): one output per input.

For every input fragment it hard-links each file to DATA_VOLUME_PATH/output/<fragment id>/
(a copy where a link is impossible), sends one output fragment naming the input as its
predecessor, then says it is done with the input. Linking keeps the transformation's own
cost out of the measurement and a 512 MiB file from being copied on the volume.
"""

import os
import shutil

from pyterum import (
    LocalFileDesc,
    LocalFragmentDesc,
    TransformationStepInput,
    TransformationStepOutput,
)


def main() -> None:
    volume = os.environ["DATA_VOLUME_PATH"]
    ts_in = TransformationStepInput()
    ts_out = TransformationStepOutput()
    for msg in ts_in.consumer():
        if msg is None:  # the kill: no more input
            ts_out.produce_done()
            ts_out.close()
            break
        out_dir = os.path.join(volume, "output", msg.metadata.fragment_id)
        os.makedirs(out_dir, exist_ok=True)
        outputs = []
        for file in msg.files:
            dest = os.path.join(out_dir, file.name)
            try:
                os.link(file.path, dest)
            except OSError:
                shutil.copyfile(file.path, dest)
            outputs.append(LocalFileDesc(name=file.name, path=dest))
        ts_out.produce(LocalFragmentDesc(files=outputs, predecessors=[msg.metadata.fragment_id]))
        ts_out.done_with(msg)


if __name__ == "__main__":
    main()
