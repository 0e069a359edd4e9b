"""1→1 that reads a config file through pyterum.config.get_filepath($CONFIG_ALIAS, default
"settings") and writes its content as the output file "config_<input id prefix>.txt".

The lookup happens at the first input: by then the sidecar is up and has created the
config directory, which pyterum asserts exists (it does not wait for the directory).
"""

import os

from _record import Recorder, output_dir
from pyterum import (
    LocalFileDesc,
    LocalFragmentDesc,
    TransformationStepInput,
    TransformationStepOutput,
    config,
)


def main() -> None:
    rec = Recorder("config_reader")
    alias = os.environ.get("CONFIG_ALIAS", "settings")
    content = None
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
        if content is None:
            path = config.get_filepath(alias)  # polls every 5 s until the file exists
            with open(path) as f:
                content = f.read()
            rec.note("config_path", path)
            rec.note("config_content", content)
        fid = msg.metadata.fragment_id
        name = f"config_{fid[:12]}.txt"
        dest = os.path.join(output_dir(fid), name)
        with open(dest, "w") as f:
            f.write(content)
        out = LocalFragmentDesc(files=[LocalFileDesc(name=name, path=dest)], predecessors=[fid])
        ts_out.produce(out)
        rec.produced(out)
        ts_out.done_with(msg)
        rec.done_with(msg)


if __name__ == "__main__":
    main()
