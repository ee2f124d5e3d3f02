"""The one atomic writer: files and folders appear whole or not at all."""

import json

import pytest

from care.atomic import staged_directory, write_json_atomic, write_text_atomic


def test_a_file_is_replaced_whole_and_no_temp_file_is_left(tmp_path):
    path = tmp_path / "deep" / "final.json"
    write_json_atomic(path, {"b": 1, "a": float("nan")})
    write_text_atomic(path, json.dumps({"after": 2}))
    assert json.loads(path.read_text()) == {"after": 2}
    assert [p.name for p in path.parent.iterdir()] == ["final.json"]


def test_a_failed_fill_publishes_nothing_and_leaves_no_staging(tmp_path):
    target = tmp_path / "backbone"
    with pytest.raises(RuntimeError, match="disk full"), staged_directory(target) as staging:
        (staging / "config.json").write_text("{}")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_the_first_publisher_wins_and_the_second_is_dropped(tmp_path):
    target = tmp_path / "backbone"
    with staged_directory(target) as first, staged_directory(target) as second:
        (second / "who").write_text("second")
        (first / "who").write_text("first")
    assert (target / "who").read_text() == "second"  # the inner block finished first
    assert [p.name for p in tmp_path.iterdir()] == ["backbone"]


def test_published_files_and_folders_follow_the_umask_not_mkstemps_0600(tmp_path):
    """A cache shared by a group (cold starts, before-RL scores) must be readable by its other users."""
    import os

    from care.atomic import staged_directory, write_text_atomic

    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "final.json", "{}")
        with staged_directory(tmp_path / "entry") as staging:
            (staging / "x").write_text("1")
    finally:
        os.umask(old)
    assert (tmp_path / "final.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "entry").stat().st_mode & 0o777 == 0o755
