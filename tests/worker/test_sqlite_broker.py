"""The embedded broker's channel: empty queues are not queried again until the file changes,
and a message published by another connection is still picked up."""

from __future__ import annotations

from pathlib import Path
from queue import Empty

import pytest
from kombu import Connection
from kombu.transport import sqlalchemy as sqla_transport

from worker.sqlite_broker import DataVersionChannel


def test_an_unchanged_file_is_not_queried_and_a_new_message_is_found(tmp_path: Path, monkeypatch) -> None:
    url = f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"
    looks: list[str] = []
    original = sqla_transport.Channel._get

    def counted(self, queue):  # noqa: ANN001, ANN202 - the kombu method's own signature
        looks.append(queue)
        return original(self, queue)

    monkeypatch.setattr(sqla_transport.Channel, "_get", counted)
    monkeypatch.setattr(sqla_transport.Transport, "Channel", DataVersionChannel)
    with Connection(url) as consumer, Connection(url) as publisher:
        channel = consumer.default_channel
        assert isinstance(channel, DataVersionChannel)
        channel._new_queue("jobs")
        for _ in range(5):
            with pytest.raises(Empty):
                channel._get("jobs")
        assert len(looks) == 1  # one real look; the next four saw the same data_version

        publisher.default_channel._put("jobs", {"body": "job-1"})  # another connection commits
        assert channel._get("jobs") == {"body": "job-1"}
        assert len(looks) == 2
        with pytest.raises(Empty):
            channel._get("jobs")  # its own take committed: looked once more, found nothing
        with pytest.raises(Empty):
            channel._get("jobs")
        assert len(looks) == 3
    # The channel put the file in WAL mode (no fsync per take and ack); it persists in the file.
    import sqlite3

    with sqlite3.connect(tmp_path / "broker.sqlite") as check:
        assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
