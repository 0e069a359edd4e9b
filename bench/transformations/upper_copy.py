"""The benchmark's file-writing transformation (pyterum 0.6.6), written as a user would.

For every input fragment it reads each file whole and writes an upper-cased copy to
DATA_VOLUME_PATH/output/<fragment id>/<name>, sends one output fragment naming the input
as its predecessor, then says it is done with the input. Unlike link_passthrough.py it
does what a real step does to the volume (a read, a new file written), so the sidecar
uploads a file that was just written rather than a hard link to the one it downloaded.
"""

import os

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
            with open(file.path, "rb") as f:
                data = f.read()
            dest = os.path.join(out_dir, file.name)
            with open(dest, "wb") as f:
                f.write(data.upper())
            outputs.append(LocalFileDesc(name=file.name, path=dest))
        ts_out.produce(LocalFragmentDesc(files=outputs, predecessors=[msg.metadata.fragment_id]))
        ts_out.done_with(msg)


if __name__ == "__main__":
    main()
