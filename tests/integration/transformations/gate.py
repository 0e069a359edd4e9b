"""1→1 like passthrough, but each fragment waits for a gate: it is processed only once the
file $GATE_FILE exists (no gate when the variable is unset). The test decides when the
transformation's work finishes, e.g. to send SIGTERM while fragments are in its hands."""

import os
import time

from _record import Recorder, copy_to, output_dir
from pyterum import (
    LocalFileDesc,
    LocalFragmentDesc,
    TransformationStepInput,
    TransformationStepOutput,
)


def wait_for_gate() -> None:
    gate = os.environ.get("GATE_FILE")
    while gate and not os.path.exists(gate):
        time.sleep(0.05)


def main() -> None:
    rec = Recorder("gate")
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
        wait_for_gate()
        fid = msg.metadata.fragment_id
        files = [LocalFileDesc(name=f"gated_{f.name}",
                               path=copy_to(f.path, output_dir(fid), f"gated_{f.name}"))
                 for f in msg.files]
        out = LocalFragmentDesc(files=files, predecessors=[fid])
        ts_out.produce(out)
        rec.produced(out)
        ts_out.done_with(msg)
        rec.done_with(msg)


if __name__ == "__main__":
    main()
