"""The abuse rules (issue 19), as pure functions: who the client is, which destinations SMS may go to, the one
counted form of a mailbox, and what a request counts against. Nothing here reads a clock or a table.

Why each exists: the per-key limits (policy.py) stop attacks on one key, but not SMS pumping (thousands of new
numbers in one premium range, every one billed) nor spraying (many keys from one client). Those are counted per
client address, per destination range or mail domain, and per channel across every instance (service_layer/limits.py).
"""
from __future__ import annotations

import ipaddress
import math
import unicodedata
from typing import Iterable, NamedTuple, Sequence, Union

import phonenumbers
from confusable_homoglyphs import categories

from . import errors

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

# IPv6 clients are counted per /64: one subscriber is handed a whole /64 (RFC 6177), so counting single addresses
# would give one client 2**64 separate limits.
IPV6_CLIENT_PREFIX = 64


# -- the client's address ---------------------------------------------------------------------------------------------
def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (or single addresses) as networks; ValueError names the one that does not parse."""
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in items)


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The address a request is counted against, as text: an IPv4 address or an IPv6 /64.

    The socket peer, unless the peer is a trusted proxy: then the rightmost address of X-Forwarded-For that is not
    itself a trusted proxy (every proxy appends the address it received from, so only the entries right of the
    first untrusted hop are trustworthy). A malformed entry stops the walk at the proxy that passed it on.
    """
    client = _address(peer)
    if client is None:
        return "unknown"
    if trusted and forwarded_for and _trusted(client, trusted):
        for item in reversed(forwarded_for.split(",")):
            hop = _address(item.strip())
            if hop is None:
                break
            client = hop
            if not _trusted(hop, trusted):
                break
    return _counted_form(client)


def _address(text: str | None) -> Address | None:
    if not text:
        return None
    try:
        found = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is not None:
        return found.ipv4_mapped
    return found


def _trusted(address: Address, trusted: Sequence[Network]) -> bool:
    return any(address.version == network.version and address in network for network in trusted)


def _counted_form(address: Address) -> str:
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/{IPV6_CLIENT_PREFIX}", strict=False))
    return str(address)


# -- where SMS may go -------------------------------------------------------------------------------------------------
# Number types (libphonenumber's number_type) refused by default: they cannot receive an SMS, or an SMS to them
# bills at a premium. FIXED_LINE only where the type is certain: FIXED_LINE_OR_MOBILE numbers (the US, India's
# ambiguous ranges) are allowed.
NUMBER_TYPES = {
    "premium_rate": phonenumbers.PhoneNumberType.PREMIUM_RATE,
    "shared_cost": phonenumbers.PhoneNumberType.SHARED_COST,
    "toll_free": phonenumbers.PhoneNumberType.TOLL_FREE,
    "uan": phonenumbers.PhoneNumberType.UAN,
    "voicemail": phonenumbers.PhoneNumberType.VOICEMAIL,
    "fixed_line": phonenumbers.PhoneNumberType.FIXED_LINE,
    "pager": phonenumbers.PhoneNumberType.PAGER,
    "personal_number": phonenumbers.PhoneNumberType.PERSONAL_NUMBER,
    "voip": phonenumbers.PhoneNumberType.VOIP,
    "unknown": phonenumbers.PhoneNumberType.UNKNOWN,
}
DEFAULT_DENIED_NUMBER_TYPES = ("premium_rate", "shared_cost", "toll_free", "uan", "voicemail", "fixed_line")
ANY_COUNTRY = "*"
_NON_GEOGRAPHIC = ("001", None, "ZZ")


class SmsDestinations(NamedTuple):
    """Where SMS may go: regions (ISO 3166 alpha-2, or "*" for any), refused E.164 prefixes, refused number types."""

    allowed_regions: frozenset[str]
    denied_prefixes: tuple[str, ...]
    denied_types: frozenset[int]

    def allows(self, e164: str) -> bool:
        if any(e164.startswith(prefix) for prefix in self.denied_prefixes):
            return False
        number = phonenumbers.parse(e164, None)
        region = phonenumbers.region_code_for_number(number)
        if region not in self.allowed_regions and (
            ANY_COUNTRY not in self.allowed_regions or region in _NON_GEOGRAPHIC
        ):
            return False  # "*" is every country; non-geographic numbers (+800, +881, +883...) only when listed as 001
        return phonenumbers.number_type(number) not in self.denied_types

    def check(self, e164: str) -> None:
        if not self.allows(e164):
            raise errors.destination_not_allowed()


def parse_prefix(item: str) -> str:
    """An E.164 prefix as written in OTP_SMS_DENIED_PREFIXES ("+252", "+1 900", "44909") in its plain form "+252"."""
    digits = "".join(ch for ch in item if not ch.isspace() and ch not in "-()")
    digits = digits.removeprefix("+")
    if not digits.isascii() or not digits.isdigit() or not 1 <= len(digits) <= 15:
        raise ValueError(item)
    return "+" + digits


# -- one mailbox, one counted form ------------------------------------------------------------------------------------
# Providers that ignore dots in the local part, and the domains that are one mailbox domain.
DOTLESS_PROVIDERS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}
# Latin letters that look like an ASCII letter but decompose to none (UTS #39 maps them to it): folded for counting.
_LATIN_LOOKALIKES = str.maketrans({"ı": "i", "ȷ": "j", "ł": "l", "ø": "o", "đ": "d", "ħ": "h", "ŧ": "t", "ß": "ss"})


def canonical_email(address: str) -> str:
    """The form every limit counts an email under; mail is still delivered to the address as given.

    - The domain: NFKC and case-folded; googlemail.com is gmail.com.
    - The local part: NFKC and case-folded (fullwidth `ｖ` is `v`), accents and the Latin look-alikes without a
      decomposition (`ı`, `ø`, ...) folded to ASCII, a `+tag` dropped (RFC 5233 sub-addressing: Gmail, Outlook,
      iCloud, Fastmail and Proton deliver `name+tag` to `name`), and for Gmail every dot dropped.
    Folding more than a provider does only makes limits stricter for two mailboxes that look the same. (A local part
    that mixes scripts never gets here: normalise_email refuses it, see mixes_scripts.)
    """
    local, _, domain = address.rpartition("@")
    domain = unicodedata.normalize("NFKC", domain).casefold()
    domain = DOTLESS_PROVIDERS.get(domain, domain)
    local = unicodedata.normalize("NFKC", local).casefold()
    untagged = local.split("+", 1)[0]
    local = untagged or local
    decomposed = unicodedata.normalize("NFKD", local.translate(_LATIN_LOOKALIKES))
    local = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    if domain == "gmail.com":
        local = local.replace(".", "")
    return f"{local}@{domain}"


def mixes_scripts(address: str) -> bool:
    """Whether the local part mixes scripts (a Cyrillic `і` among Latin letters; digits and punctuation are of the
    Common script and combining marks of the Inherited one, which mix with any: UTS #39), by the Unicode Scripts
    data of confusable-homoglyphs. Such an address is refused as INVALID_EMAIL: no mailbox needs one, and it is how
    look-alikes of a real address are made."""
    local = unicodedata.normalize("NFKC", address.rpartition("@")[0])
    # categories, not confusables.is_mixed_script (the same test): that module also loads 900 KB of confusables data
    # into every worker, which this does not use.
    return not local.isascii() and len(categories.unique_aliases(local) - {"COMMON", "INHERITED"}) > 1


def email_domain(canonical: str) -> str:
    return canonical.rpartition("@")[2]


def phone_prefix(e164: str, digits: int) -> str:
    """The number range of an E.164 phone: its first `digits` digits ("+91 98765" for 7)."""
    return e164[: 1 + digits]


# -- fixed windows ----------------------------------------------------------------------------------------------------
def window_start(now: float, seconds: int) -> float:
    """Windows are aligned to multiples of their length since the epoch, so every instance counts the same window
    without agreeing on anything. (A burst at a window's end and the next one's start can reach twice the limit.)"""
    return math.floor(now / seconds) * seconds


def retry_after(now: float, start: float, seconds: int) -> int:
    return max(1, math.ceil(start + seconds - now))


def unit_of(seconds: int) -> str:
    """The unit named in ERROR_RATE_LIMIT_EXCEEDED's message: "minute", "hour", "day", else "N seconds"."""
    named = {60: "minute", 3600: "hour", 86400: "day"}
    if seconds in named:
        return named[seconds]
    for length, name in ((86400, "days"), (3600, "hours"), (60, "minutes")):
        if seconds % length == 0:
            return f"{seconds // length} {name}"
    return "second" if seconds == 1 else f"{seconds} seconds"
