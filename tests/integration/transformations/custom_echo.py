"""1→1 that copies the input's metadata.custom into the output's metadata.custom
(files copied as "echo_<name>"); the record keeps the custom it received."""

from _record import Recorder, copy_to, output_dir
from pyterum import (
    LocalFileDesc,
    LocalFragmentDesc,
    TransformationStepInput,
    TransformationStepOutput,
)


def main() -> None:
    rec = Recorder("custom_echo")
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
        files = [LocalFileDesc(name=f"echo_{f.name}",
                               path=copy_to(f.path, output_dir(fid), f"echo_{f.name}"))
                 for f in msg.files]
        out = LocalFragmentDesc(files=files, predecessors=[fid])
        out.metadata.custom = msg.metadata.custom
        ts_out.produce(out)
        rec.produced(out)
        ts_out.done_with(msg)
        rec.done_with(msg)


if __name__ == "__main__":
    main()
