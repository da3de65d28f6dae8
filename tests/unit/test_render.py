"""Atomic writes: contents, modes, backups, unchanged files, dry mode, errors."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from ctemplate.errors import RenderError
from ctemplate.output.write import render


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_writes_new_file_with_default_mode(tmp_path):
    dest = tmp_path / "out.conf"
    result = render(str(dest), "hello\n")
    assert (result.changed, result.written) == (True, True)
    assert dest.read_text() == "hello\n"
    assert _mode(dest) == 0o644


def test_unchanged_bytes_are_not_rewritten(tmp_path):
    dest = tmp_path / "out.conf"
    render(str(dest), "same\n")
    inode = os.stat(dest).st_ino
    result = render(str(dest), "same\n")
    assert (result.changed, result.written) == (False, False)
    assert os.stat(dest).st_ino == inode


def test_explicit_perms_and_kept_mode(tmp_path):
    dest = tmp_path / "out.conf"
    render(str(dest), "a", perms=0o600)
    assert _mode(dest) == 0o600
    os.chmod(dest, 0o640)
    render(str(dest), "b")
    assert _mode(dest) == 0o640


def test_backup_keeps_previous_content(tmp_path):
    dest = tmp_path / "out.conf"
    render(str(dest), "one\n", backup=True)
    assert not (tmp_path / "out.conf.bak").exists()
    render(str(dest), "two\n", backup=True)
    assert (tmp_path / "out.conf.bak").read_text() == "one\n"
    assert dest.read_text() == "two\n"


def test_creates_parent_directories_or_says_how(tmp_path):
    dest = tmp_path / "a" / "b" / "out.conf"
    render(str(dest), "x")
    assert dest.read_text() == "x"
    other = tmp_path / "missing" / "out.conf"
    with pytest.raises(RenderError) as info:
        render(str(other), "x", create_dest_dirs=False)
    assert str(info.value) == (
        f"{other}: directory {other.parent} does not exist "
        "(create it, or set create_dest_dirs = true)"
    )


def test_dry_prints_and_writes_nothing(tmp_path):
    dest = tmp_path / "out.conf"
    out = io.StringIO()
    result = render(str(dest), "content\n", dry=True, dry_out=out)
    assert result.changed and not result.written
    assert out.getvalue() == f"> {dest}\ncontent\n"
    assert not dest.exists()


def test_failed_check_keeps_old_file_and_leaves_no_temp(tmp_path):
    dest = tmp_path / "out.conf"
    render(str(dest), "good\n")
    seen = []

    def check(staged):
        seen.append(Path(staged).read_text())
        raise RenderError("check failed")

    with pytest.raises(RenderError, match="check failed"):
        render(str(dest), "bad\n", check=check)
    assert seen == ["bad\n"]
    assert dest.read_text() == "good\n"
    assert sorted(os.listdir(tmp_path)) == ["out.conf"]


def test_destination_is_a_directory(tmp_path):
    with pytest.raises(RenderError, match="is a directory; point destination at a file"):
        render(str(tmp_path), "x")
