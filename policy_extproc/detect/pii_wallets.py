"""Checksums of cryptocurrency wallet addresses: Bitcoin base58check and bech32, Ethereum EIP-55."""

from __future__ import annotations

import hashlib
from functools import lru_cache

from Crypto.Hash import keccak

# --- Bitcoin legacy: base58check --------------------------------------------------------------

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}


def is_btc_base58(value: str) -> bool:
    """A P2PKH (version 0x00) or P2SH (0x05) address whose double-SHA-256 checksum matches."""
    num = 0
    for ch in value:
        digit = _B58_INDEX.get(ch)
        if digit is None:
            return False
        num = num * 58 + digit
    # Base58 writes each leading zero byte as a "1"; the rest is the number, big-endian.
    ones = len(value) - len(value.lstrip("1"))
    raw = b"\0" * ones + num.to_bytes((num.bit_length() + 7) // 8, "big")
    if len(raw) != 25 or raw[0] not in (0x00, 0x05):  # version + hash160 + 4-byte checksum
        return False
    payload, checksum = raw[:21], raw[21:]
    return hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4] == checksum


# --- Bitcoin segwit: bech32 (BIP-173) and bech32m (BIP-350) -----------------------------------

_BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_INDEX = {c: i for i, c in enumerate(_BECH32_CHARSET)}
_BECH32_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_BECH32_CONST = 1
_BECH32M_CONST = 0x2BC830A3


def _bech32_polymod(values: list[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            if (top >> i) & 1:
                chk ^= _BECH32_GEN[i]
    return chk


def is_btc_bech32(value: str) -> bool:
    """A mainnet segwit address: v0 in bech32 with a 20/32-byte program, v1+ in bech32m."""
    if value.lower() != value and value.upper() != value:
        return False  # BIP-173: mixed case is invalid
    addr = value.lower()
    hrp, sep, data_part = addr.rpartition("1")
    if hrp != "bc" or not sep or len(addr) > 90 or len(data_part) < 7:
        return False
    try:
        data = [_BECH32_INDEX[c] for c in data_part]
    except KeyError:
        return False
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    const = _bech32_polymod(expanded + data)
    version, program5 = data[0], data[1:-6]
    if version > 16 or const != (_BECH32_CONST if version == 0 else _BECH32M_CONST):
        return False
    # Regroup the 5-bit program into bytes; leftover padding must be under 5 bits and zero.
    acc = bits = 0
    program = bytearray()
    for v in program5:
        acc = ((acc << 5) | v) & 0xFFF
        bits += 5
        if bits >= 8:
            bits -= 8
            program.append((acc >> bits) & 0xFF)
    if bits >= 5 or (acc << (8 - bits)) & 0xFF:
        return False
    if version == 0:
        return len(program) in (20, 32)
    return 2 <= len(program) <= 40


# --- Ethereum: EIP-55 mixed-case checksum over Keccak-256 -------------------------------------


def keccak256(data: bytes) -> bytes:
    """Keccak-256 as Ethereum uses it (original Keccak padding, not FIPS 202 SHA-3).

    hashlib's sha3_256 pads differently, so pycryptodome's C implementation is used: about
    11 us a hash where the pure-Python permutation this replaces took about 400 us.
    """
    return keccak.new(digest_bits=256, data=data).digest()


@lru_cache(maxsize=1024)
def is_eth_address(value: str) -> bool:
    """0x + 40 hex; when the letters mix cases, they must spell the EIP-55 checksum."""
    body = value[2:]
    if len(body) != 40 or value[:2] != "0x":
        return False
    try:
        int(body, 16)
    except ValueError:
        return False
    if body.lower() == body or body.upper() == body:
        return True  # no checksum carried (all one case): valid but unverifiable
    digest = keccak256(body.lower().encode("ascii")).hex()
    return all(
        ch.isdigit() or ch.isupper() == (int(h, 16) >= 8)
        for ch, h in zip(body, digest, strict=False)
    )
