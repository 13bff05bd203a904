"""gluon_face._io: temporary files left by killed writers, folders made for a failed write."""
import os

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
