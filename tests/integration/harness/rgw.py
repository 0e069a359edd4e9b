"""Ceph RGW, a real S3 server, for the tests' RGW tier (`--s3=rgw` or ITERUM_TEST_S3=rgw).

tools/rgw.sh does the work: it installs the Debian packages if they are missing, makes a
single-node cluster under a temp dir (memstore, bound to 127.0.0.1) and starts radosgw, with
STS on so that a session token can be tested (its side effect: a wrong secret is answered
AccessDenied, not SignatureDoesNotMatch). `destroy()` stops the daemons and removes the dir.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "tools" / "rgw.sh"
ROLE = "iterum-harness-role"


class RgwUnavailable(RuntimeError):
    """RGW could not be installed or started; the message says why and where the logs are."""


@dataclass
class Rgw:
    directory: Path
    address: tuple[str, int]
    access_key: str
    secret_key: str
    role_arn: str

    def destroy(self) -> None:
        _script("destroy", str(self.directory), timeout=120)


def start_rgw() -> Rgw:
    directory = Path(tempfile.mkdtemp(prefix="iterum-rgw-"))
    try:
        _script("start", str(directory), timeout=900)  # the first time: apt-get install
        env = _exports(_script("env", str(directory)))
        role_arn = _script("role", str(directory), ROLE).strip()
    except RgwUnavailable as err:  # stopped, but its logs are kept to read
        subprocess.run(["bash", str(SCRIPT), "stop", str(directory)], capture_output=True,
                       timeout=120, check=False)
        raise RgwUnavailable(f"{err} (logs kept in {directory}/log)") from None
    host, _, port = env["S3_HOST"].rpartition(":")
    return Rgw(directory, (host, int(port)), env["AWS_ACCESS_KEY_ID"],
               env["AWS_SECRET_ACCESS_KEY"], role_arn)


def _script(*args: str, timeout: float = 120) -> str:
    environ = {**os.environ, "RGW_STS": "1"}
    for name in ("RGW_ACCESS_KEY", "RGW_SECRET_KEY", "RGW_PORT", "RGW_STORE"):
        environ.pop(name, None)  # a developer's own settings do not leak into the tests
    try:
        done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                              env=environ, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RgwUnavailable(f"RGW for the tests: `{SCRIPT.name} {' '.join(args)}` did not end "
                             f"within {timeout:.0f}s") from None
    if done.returncode != 0:
        raise RgwUnavailable(f"RGW for the tests could not start: `{SCRIPT.name} "
                             f"{' '.join(args)}` exited {done.returncode}: "
                             f"{done.stderr.strip()[-2000:]}")
    return done.stdout


def _exports(text: str) -> dict[str, str]:
    """`export NAME=value` lines, as `rgw.sh env` prints them."""
    env = {}
    for line in text.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        if value:
            env[name] = shlex.split(value)[0]
    return env
