"""gluon_face._io: temporary files left by killed writers, folders made for a failed write,
permissions that follow the umask."""
import os
import stat

import pytest

from gluon_face._io import atomic_open, atomic_path, remove_stale_temps, stale_temps


def test_stale_temps_match_only_atomic_paths_names(tmp_path):
    dest = tmp_path / "train.rec"
    ours = [tmp_path / ".train.rec.abcd_123.tmp", tmp_path / ".train.rec.zz9zz9zz.params.tmp"]
    others = [tmp_path / ".train.rec.tmp", tmp_path / ".train.rec.abc.tmp",
              tmp_path / ".train.rec.ABCDEFGH.tmp", tmp_path / ".val.rec.abcd_123.tmp",
              tmp_path / ".train.recx.abcd_123.tmp", tmp_path / "train.rec.abcd_123.tmp"]
    for path in ours + others:
        path.write_bytes(b"")
    (tmp_path / ".train.rec.folder12.tmp").mkdir()  # a folder is not a file of ours
    assert stale_temps(dest) == [str(ours[0])]
    assert stale_temps(dest, suffix=".params") == [str(ours[1])]
    assert stale_temps(tmp_path / "nowhere" / "x") == []
    assert remove_stale_temps([dest, tmp_path / "val.idx"]) == [str(ours[0])]
    assert not ours[0].exists() and all(p.exists() for p in others + ours[1:])


def test_a_killed_writers_temporary_file_is_what_stale_temps_finds(tmp_path):
    dest = tmp_path / "labels.txt"
    with atomic_path(dest) as tmp:
        assert stale_temps(dest) == [tmp]
    assert stale_temps(dest) == [] and dest.exists()


def test_failed_write_removes_the_folders_it_made(tmp_path):
    with pytest.raises(RuntimeError), atomic_open(tmp_path / "a" / "b" / "x.txt") as f:
        f.write("half")
        raise RuntimeError("stop")
    assert os.listdir(tmp_path) == []
    # a folder that existed before stays, and so does one that another file now holds
    (tmp_path / "a").mkdir()
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "a" / "b" / "x.txt"):
        (tmp_path / "a" / "b" / "other").write_text("someone else's")
        raise RuntimeError("stop")
    assert os.listdir(tmp_path / "a" / "b") == ["other"]
    with atomic_open(tmp_path / "c" / "y.txt") as f:
        f.write("done")
    assert (tmp_path / "c" / "y.txt").read_text() == "done"


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_and_folders_follow_the_umask(tmp_path, umask):
    """Under umask 022 others can read what we write (tempfile alone makes 0600/0700)."""
    from gluon_face._io import make_temp_dir

    old = os.umask(umask)
    try:
        with atomic_open(tmp_path / "a.txt") as f:
            f.write("x")
        folder = make_temp_dir(str(tmp_path), ".ckpt.")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o777 & ~umask


def test_a_checkpoint_folder_is_readable_by_others(tmp_path):
    from gluon_face.training.checkpoint import copy_checkpoint

    src = tmp_path / "src"
    src.mkdir()
    (src / "state.json").write_text("{}")
    old = os.umask(0o022)
    try:
        copy_checkpoint(str(src), str(tmp_path / "ckpt" / "last"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "ckpt" / "last").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(tmp_path / "ckpt" / "last" / "state.json").st_mode) == 0o644
