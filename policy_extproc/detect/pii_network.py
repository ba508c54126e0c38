"""Checks of network and contact values: mail addresses, IPv4 and IPv6 addresses.

Part of the PII validators (``pii_validators`` re-exports them): each takes the candidate as it
stands in the text and answers yes or no, without looking at its context.
"""

from __future__ import annotations

import ipaddress

# Extensions that look like a TLD after an "@2x"-style asset name but are not mail domains.
_FILE_EXTENSIONS = (
    "png jpg jpeg gif svg webp bmp ico tif tiff css js mjs ts tsx jsx json yaml yml toml txt "
    "log csv lock html htm xml md rst java kt rb go rs py pyc so dll exe bin wasm zip gz tar"
)
_FILE_TLDS = frozenset(_FILE_EXTENSIONS.split())


def is_email(value: str) -> bool:
    """RFC 5321 sizes (64 local, 253 domain), no empty atoms, labels without edge hyphens.

    Internationalised addresses (RFC 6531: ``jörg@bücher.example``) count: letters of any
    script in the local part and the domain, and a TLD of letters or its punycode ``xn--``.
    """
    local, _, domain = value.rpartition("@")
    if not 0 < len(local) <= 64 or len(domain) > 253 or ".." in local:
        return False
    if local[0] == "." or local[-1] == ".":
        return False
    labels = domain.split(".")
    tld = labels[-1].lower()
    punycode = tld.startswith("xn--") and tld[4:].replace("-", "").isalnum()
    if tld in _FILE_TLDS or not (tld.isalpha() or punycode):
        return False
    if len(labels) < 2:
        return False
    for label in labels:
        if not 0 < len(label) <= 63 or label[0] == "-" or label[-1] == "-":
            return False
    return True


def _prefix(value: str, bits: int) -> str | None:
    """The address of a CIDR block ("10.0.0.0/8" -> "10.0.0.0"), or None for a bad length."""
    address, slash, length = value.partition("/")
    if slash and not (
        (length.isdigit() and int(length) <= bits and length[:1] != "0") or length == "0"
    ):
        return None
    return address


def is_ipv4(value: str) -> bool:
    """Four decimal octets 0-255 without leading zeros (which some parsers read as octal).

    A CIDR length may follow ("192.168.1.0/24"): the block is masked whole.
    """
    address = _prefix(value, 32)
    if address is None:
        return False
    parts = address.split(".")
    return len(parts) == 4 and all(
        p.isdigit() and int(p) <= 255 and (p == "0" or p[0] != "0") for p in parts
    )


def is_ipv6(value: str) -> bool:
    """An RFC 4291 text address with enough groups that it is no C++ scope or clock time.

    A zone ("fe80::1%eth0") or a CIDR length ("2001:db8::/32") may follow. The loopback and
    unspecified addresses (``::1``, ``::``) name no host of anyone's and are left alone.
    """
    address = _prefix(value, 128)
    if address is None:
        return False
    address = address.partition("%")[0]
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return False
    groups = [g for g in address.split(":") if g]
    if groups and "." in groups[-1]:  # an IPv4 tail ("::ffff:10.0.0.1") is two groups
        groups.append("0")
    if len(groups) >= 3:
        return True
    # "fe80::1" is an address; "dead::beef" or "a::b" are more likely code.
    return len(groups) == 2 and any(c.isdigit() for c in address) and sum(map(len, groups)) >= 5
