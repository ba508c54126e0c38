"""HPACK decoding that remembers the header blocks which leave the dynamic table alone.

Envoy opens one ext_proc stream per HTTP request, and its gRPC request headers are the same
every time: once its dynamic table is warm, each stream's HEADERS carries the same block, byte
for byte (indexed fields and literals without indexing, which change no table). ``hpack``
decodes in pure Python, about 25 us a block; this decodes such a block once.

Decoding is a function of the block and the dynamic table (its entries and its size): a block
whose decoding left the table as it found it decodes to the same fields, with the same table
after, whenever the table is in that state again. So a block is remembered only when its
decoding changed neither the entries nor the size, and everything remembered is forgotten the
moment any block changes them, or fails (a failing block may have changed the table first;
it is never remembered, so it is decoded, and fails, every time).
"""

from __future__ import annotations

from typing import cast

import hpack

# Distinct blocks remembered per connection: Envoy sends one; a peer varying its blocks without
# touching the table (literals without indexing) must not grow this without bound.
MAX_REMEMBERED = 32


class CachingDecoder:
    """``hpack.Decoder`` for one connection, with the blocks that change no state remembered."""

    def __init__(self, max_header_list_size: int) -> None:
        self._decoder = hpack.Decoder(max_header_list_size=max_header_list_size)
        self._known: dict[bytes, list[tuple[str, str]]] = {}

    def decode(self, block: bytes) -> list[tuple[str, str]]:
        """The header fields of ``block``, as ``hpack.Decoder.decode`` gives them (a new list
        each time); raises what it raises."""
        fields = self._known.get(block)
        if fields is not None:
            return list(fields)
        table = self._decoder.header_table
        entries, size = tuple(table.dynamic_entries), table.maxsize
        try:
            # Not raw: str names and values (hpack's stubs say the result may be None).
            fields = cast("list[tuple[str, str]]", self._decoder.decode(block))
        except BaseException:
            self._known.clear()  # the table may have changed before the error
            raise
        if table.maxsize == size and tuple(table.dynamic_entries) == entries:
            if len(self._known) < MAX_REMEMBERED:
                self._known[bytes(block)] = list(fields)
        elif self._known:
            self._known.clear()
        return fields


__all__ = ["MAX_REMEMBERED", "CachingDecoder"]
