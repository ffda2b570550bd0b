"""The result-folder contract (atomic writes, reading back) and the JSON-lines protocol."""

from __future__ import annotations

import json

import pytest

from mvdpp import protocol, rig
from mvdpp.result import (CAMERAS_FILE, ResultFormatError, ResultWriter, cameras_document, read_result,
                          view_filename)


def _write_minimal_result(writer: ResultWriter) -> None:
    cams = rig.rig_cameras()
    for cam in cams:
        writer.path(view_filename(cam.index)).write_bytes(b"png")
    writer.write_json(CAMERAS_FILE, cameras_document(cams, (64, 64)))


def test_result_writer_commits_atomically_and_reader_reads_it_back(tmp_path):
    target = tmp_path / "out"
    with ResultWriter(target) as writer:
        _write_minimal_result(writer)
        assert not target.exists()  # nothing visible until commit
        writer.commit()
    result = read_result(target)
    assert len(result.views) == 32 and result.image_size == (64, 64)
    assert result.views[5].camera == rig.rig_cameras()[5]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_result_writer_leaves_nothing_when_the_job_fails(tmp_path):
    with pytest.raises(RuntimeError):
        with ResultWriter(tmp_path / "out") as writer:
            _write_minimal_result(writer)
            raise RuntimeError("cancelled half-way")
    assert list(tmp_path.iterdir()) == []


def test_result_writer_refuses_to_overwrite_unless_asked(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError):
        ResultWriter(tmp_path / "out")
    with ResultWriter(tmp_path / "out", overwrite=True) as writer:
        _write_minimal_result(writer)
        writer.commit()
    assert len(read_result(tmp_path / "out").views) == 32
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_reader_names_what_is_missing(tmp_path):
    with pytest.raises(ResultFormatError, match="cameras.json is missing"):
        read_result(tmp_path)
    doc = cameras_document(rig.rig_cameras(), (64, 64))
    (tmp_path / CAMERAS_FILE).write_text(json.dumps(doc))
    with pytest.raises(ResultFormatError, match="view_00.png"):
        read_result(tmp_path)


def test_protocol_round_trip_and_malformed_lines():
    line = protocol.encode({"type": "ping", "id": "7"})
    assert line.endswith("\n") and protocol.decode(line) == {"type": "ping", "id": "7"}
    for bad in ("not json", "[1, 2]", '{"id": 1}', b"\xff\xfe"):
        with pytest.raises(protocol.ProtocolError):
            protocol.decode(bad)
