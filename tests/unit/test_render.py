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


def test_symlink_destination_is_replaced_not_written_through(tmp_path):
    target = tmp_path / "target"
    target.write_text("theirs\n")
    target.chmod(0o666)
    dest = tmp_path / "out"
    dest.symlink_to(target)
    result = render(str(dest), "ours\n")
    assert result.written
    assert not dest.is_symlink()
    assert dest.read_text() == "ours\n"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644
    assert target.read_text() == "theirs\n"


def test_backup_is_a_hard_link_renamed_into_place(tmp_path):
    dest = tmp_path / "out"
    render(str(dest), "one\n")
    first = dest.stat().st_ino
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    (tmp_path / "out.bak").symlink_to(victim)
    render(str(dest), "two\n", backup=True)
    bak = tmp_path / "out.bak"
    assert not bak.is_symlink()
    assert (bak.read_text(), bak.stat().st_ino) == ("one\n", first)
    assert victim.read_text() == "keep\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.bak", "victim"]


def test_setuid_bit_survives_a_rewrite(tmp_path):
    dest = tmp_path / "tool"
    for text in ("a", "b"):
        render(str(dest), text, perms=0o4755)
        assert stat.S_IMODE(dest.stat().st_mode) == 0o4755


def test_directory_link_of_another_user_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("needs root to make a link owned by another user")
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    os.lchown(link, 4321, 4321)
    with pytest.raises(RenderError, match=f"{link} is a symlink owned by uid 4321"):
        render(str(link / "out"), "x")
    assert list(real.iterdir()) == []
