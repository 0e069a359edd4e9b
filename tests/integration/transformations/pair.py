"""N→1: holds inputs until it has two, then sends one output naming both as predecessors
(the files of both, as "pair_<name>"), then done_with for both. At the kill message, a
lone held input is flushed as a 1→1 output first.
"""

from _record import Recorder, copy_to, output_dir
from pyterum import (
    LocalFileDesc,
    LocalFragmentDesc,
    TransformationStepInput,
    TransformationStepOutput,
)


def emit(ts_out, rec, held) -> None:
    ids = [m.metadata.fragment_id for m in held]
    directory = output_dir("-".join(i[:16] for i in ids))
    files = [LocalFileDesc(name=f"pair_{f.name}", path=copy_to(f.path, directory,
                                                               f"pair_{f.name}"))
             for m in held for f in m.files]
    out = LocalFragmentDesc(files=files, predecessors=ids)
    ts_out.produce(out)
    rec.produced(out)
    for m in held:
        ts_out.done_with(m)
        rec.done_with(m)


def main() -> None:
    rec = Recorder("pair")
    ts_in = TransformationStepInput()
    ts_out = TransformationStepOutput()
    held = []

    for msg in ts_in.consumer():
        if msg is None:
            rec.kill()
            if held:
                emit(ts_out, rec, held)
            ts_out.produce_done()
            ts_out.close()
            rec.done()
            break
        rec.received(msg)
        held.append(msg)
        if len(held) == 2:
            emit(ts_out, rec, held)
            held = []


if __name__ == "__main__":
    main()
