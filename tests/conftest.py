"""The command-line option of the whole suite: which S3 server the integration tests use."""

from __future__ import annotations

import os

import pytest

S3_BACKENDS = ("moto", "rgw")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--s3", default=os.environ.get("ITERUM_TEST_S3") or "moto", metavar="BACKEND",
        help="S3 server of the integration tests: moto (in-process, the default) or rgw "
        "(Ceph radosgw started by tools/rgw.sh, installed with apt-get if missing); "
        "default from ITERUM_TEST_S3. The RGW tier: -m s3 --s3=rgw")


def pytest_configure(config: pytest.Config) -> None:
    backend = config.getoption("--s3")
    if backend not in S3_BACKENDS:
        raise pytest.UsageError(f"--s3 / ITERUM_TEST_S3: {backend!r} is not one of "
                                f"{', '.join(S3_BACKENDS)}")


def pytest_report_header(config: pytest.Config) -> str:
    return f"S3 backend of the integration tests: {config.getoption('--s3')}"
