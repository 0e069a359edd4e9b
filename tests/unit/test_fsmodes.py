"""Directories and files the sidecar creates on the volume get explicit modes, whatever the
umask, and keep the setgid bit of an fsGroup volume (sidecar/shell/fsmodes.py)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.shell.fsmodes import DATA_DIR, DATA_FILE, PRIVATE_DIR, create_file, make_dirs


@pytest.fixture
def strict_umask() -> Iterator[None]:
    old = os.umask(0o077)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_missing_directory_gets_the_mode(tmp_path: Path, strict_umask) -> None:
    target = tmp_path / "bucket" / "fragment" / "sub"
    make_dirs(str(target), DATA_DIR)
    for d in (tmp_path / "bucket", tmp_path / "bucket" / "fragment", target):
        assert mode(d) == DATA_DIR, d


def test_existing_directories_are_left_alone(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir(mode=0o777)
    os.chmod(volume, 0o777)
    make_dirs(str(volume / ".sidecar" / "journal"), PRIVATE_DIR)
    assert mode(volume) == 0o777
    assert mode(volume / ".sidecar") == PRIVATE_DIR


def test_the_setgid_bit_of_an_fsgroup_volume_is_kept(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    os.chmod(volume, 0o2775)
    make_dirs(str(volume / "bucket" / "f"), DATA_DIR)
    assert (volume / "bucket").stat().st_mode & stat.S_ISGID
    assert mode(volume / "bucket" / "f") == DATA_DIR | stat.S_ISGID


def test_files_are_created_with_exactly_the_mode(tmp_path: Path, strict_umask) -> None:
    path = tmp_path / "x.part"
    path.write_text("old content")
    os.chmod(path, 0o666)
    with os.fdopen(create_file(str(path), DATA_FILE), "wb") as f:
        f.write(b"new")
    assert path.read_bytes() == b"new" and mode(path) == DATA_FILE
