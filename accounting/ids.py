"""Request ids: the gateway mints them; nothing a client sends becomes an accounting key.

The id keys a request's budget hold, its settle-once marker, its ledger row and
its feedback, so it must be unique and ours. A client's own ``x-request-id`` is
kept as ``client_request_id`` in the record, for correlation only.
"""

from __future__ import annotations

import os
import re

_ID = re.compile(r"req_[0-9a-f]{24}")


def new_request_id() -> str:
    return "req_" + os.urandom(12).hex()


def is_request_id(value: object) -> bool:
    """True for ids this gateway could have minted (feedback and lookups take nothing else)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None
