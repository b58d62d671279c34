"""The archive's segment files on disk: written, read back byte for byte, damage reported with file and position."""

from __future__ import annotations

from pathlib import Path

import pytest

from choreograph import Archive, ArchiveError
from choreograph.events import StoredRecord
from choreograph.timetravel import write_segment


def records(n: int, partition: int = 0) -> list[StoredRecord]:
    return [StoredRecord("ns.events", partition, i, 1_795_000_000_000 + i, f"wf{i % 3}".encode(), bytes([i % 256]) * 50,
                         (("ce_id", f"id{i}".encode()), ("ce_kind", b"goal"))) for i in range(n)]


def test_segments_keep_every_byte_and_a_damaged_one_is_reported_with_file_and_position(tmp_path: Path) -> None:
    whole = records(500)
    write_segment(tmp_path / "ns.events" / "2026-11-18T10" / "0-0-499.avro", whole)
    write_segment(tmp_path / "ns.events" / "2026-11-18T10" / "1-0-499.avro", records(500, partition=1))
    assert list(Archive(tmp_path).records()) == whole + records(500, partition=1)

    damaged = tmp_path / "ns.events" / "2026-11-18T10" / "1-0-499.avro"
    data = damaged.read_bytes()
    damaged.write_bytes(data[: len(data) - 40])  # truncated: the last block is cut short
    archive = Archive(tmp_path)
    read = list(archive.records())
    assert read[:500] == whole, "the intact segment is read in full"
    assert read[500:] == records(500, partition=1)[: len(read) - 500]
    [problem] = archive.problems
    assert str(damaged) in problem
    assert "byte" in problem


def test_a_corrupt_header_is_reported_and_other_segments_still_read(tmp_path: Path) -> None:
    write_segment(tmp_path / "ns.events" / "2026-11-18T10" / "0-0-9.avro", records(10))
    bad = tmp_path / "ns.registry" / "2026-11-18T10" / "0-0-9.avro"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"Obj\x01 not really avro")
    archive = Archive(tmp_path)
    assert list(archive.records()) == records(10)
    assert len(archive.problems) == 1
    assert str(bad) in archive.problems[0]
    assert "byte 0" not in archive.problems[0]


def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="no such archive"):
        Archive(tmp_path / "nope")
