"""1→0: produces nothing, only done_with for every input."""

from _record import Recorder
from pyterum import TransformationStepInput, TransformationStepOutput


def main() -> None:
    rec = Recorder("filter")
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
        ts_out.done_with(msg)
        rec.done_with(msg)


if __name__ == "__main__":
    main()
