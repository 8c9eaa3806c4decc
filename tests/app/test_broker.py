"""The file-system broker: a consumer never reads a message before it is whole."""

from __future__ import annotations

from queue import Empty

import pytest
from kombu import Connection


@pytest.fixture
def channel(tmp_path):
    folder = str(tmp_path)
    options = {"data_folder_in": folder, "data_folder_out": folder}
    with Connection(
        "filesystem://", transport="worker.broker:Transport", transport_options=options
    ) as connection:
        yield connection.default_channel, tmp_path


def test_a_message_is_renamed_into_place_whole(channel):
    channel, folder = channel

    channel._put("jobs", {"task": "x", "body": "y" * 10_000})

    names = [p.name for p in folder.iterdir()]
    assert len(names) == 1 and names[0].endswith(".jobs.msg")
    assert channel._get("jobs") == {"task": "x", "body": "y" * 10_000}


def test_a_message_still_being_written_is_not_consumed(channel):
    channel, folder = channel
    (folder / ".123_abc.jobs.msg.part").write_bytes(b"")  # a writer mid-way

    with pytest.raises(Empty):
        channel._get("jobs")
