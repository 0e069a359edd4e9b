"""1→N: each input gives N outputs, N = custom["fanout"] of the input, else $FANOUT (2).

Output i copies the input's files as "fan<i>_<name>", each with the input as predecessor;
then done_with(input). N = 0 makes it a filter.
"""

import os

from _record import Recorder, copy_to, output_dir
from pyterum import (
    LocalFileDesc,
    LocalFragmentDesc,
    TransformationStepInput,
    TransformationStepOutput,
)


def main() -> None:
    rec = Recorder("fanout")
    default_n = int(os.environ.get("FANOUT", "2"))
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
        custom = msg.metadata.custom
        n = int(custom["fanout"]) if isinstance(custom, dict) and "fanout" in custom else default_n
        fid = msg.metadata.fragment_id
        for i in range(n):
            files = [LocalFileDesc(name=f"fan{i}_{f.name}",
                                   path=copy_to(f.path, output_dir(fid), f"fan{i}_{f.name}"))
                     for f in msg.files]
            out = LocalFragmentDesc(files=files, predecessors=[fid])
            ts_out.produce(out)
            rec.produced(out)
        ts_out.done_with(msg)
        rec.done_with(msg)


if __name__ == "__main__":
    main()
