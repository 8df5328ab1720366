"""The codes themselves (RFC 4086 section 6.3: from the OS CSPRNG, uniform over all N-digit strings)."""
from __future__ import annotations

import hmac
import secrets


def new_code(length: int) -> str:
    """Uniform over 10**length values; leading zeros are kept, so '004217' is as likely as '904217'."""
    return f"{secrets.randbelow(10 ** length):0{length}d}"


def codes_match(expected: str, offered: str) -> bool:
    """Constant-time comparison, so response timing tells a guesser nothing about how many digits were right."""
    return hmac.compare_digest(expected.encode(), offered.encode())
