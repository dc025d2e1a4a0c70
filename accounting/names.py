"""What an operator- or client-supplied name may look like before it becomes part of a Redis key.

Tenant names end up inside Cluster hash tags (``{<tenant>}``) and scope strings
(``tenant:<t>:tier:<x>``), so braces, colons, whitespace and control bytes are
refused rather than escaped. Amounts of money are finite and bounded: nano-USD
sums must fit Redis' 64-bit integers with room to spare.
"""

from __future__ import annotations

import math
import re
from typing import Any

_TENANT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,127}")
_KEY_ID = re.compile(r"k_[0-9a-f]{16}")
MAX_USD = 1_000_000_000.0  # $1e9 = 1e18 nano-USD, under 2**63 even after a few additions
TENANT_RULE = "1-128 characters: letters, digits, '_', '.', '@', '-' (not starting with '.', '@' or '-')"


def is_tenant(value: Any) -> bool:
    return isinstance(value, str) and _TENANT.fullmatch(value) is not None


def check_tenant(value: Any) -> str:
    if not is_tenant(value):
        raise ValueError(f"invalid tenant name {str(value)[:64]!r}: {TENANT_RULE}")
    return value


def is_key_id(value: Any) -> bool:
    return isinstance(value, str) and _KEY_ID.fullmatch(value) is not None


def check_key_id(value: Any) -> str:
    if not is_key_id(value):
        raise ValueError(f"invalid key id {str(value)[:64]!r}: expected k_ followed by 16 hex digits")
    return value


def check_usd(value: Any, name: str, *, allow_zero: bool = True) -> float:
    """A finite dollar amount in [0, MAX_USD] (JSON numbers only; strings and booleans are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number of US dollars")
    v = float(value)
    if not math.isfinite(v) or v < 0 or v > MAX_USD or (not allow_zero and v == 0):
        low = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite, {low} and at most {MAX_USD:.0f}")
    return v
