"""kombu's file-system broker, with messages that appear whole.

kombu's transport creates a message file, then locks it and writes it; a consumer
polling at that moment may move and read the file while it is still empty, fail to
decode it and crash the worker. Here a message is written under a temporary name the
consumers ignore and renamed into place, so they see all of it or none of it.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    # kombu's own classes name the second parameter differently (message, payload).
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # A leading dot: consumers match "<anything>.<queue>.msg" after the first dot.
        partial = os.path.join(self.data_folder_out, f".{name}.part")
        try:
            with open(partial, "wb") as handle:
                handle.write(dumps(payload).encode())
            os.replace(partial, final)
        except OSError as error:
            raise ChannelError(f"cannot add file {final!r} to the queue folder") from error


class Transport(filesystem.Transport):
    Channel = Channel
