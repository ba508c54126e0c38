"""The HPACK decoder that remembers blocks: always the fields and the table plain hpack gives."""

from __future__ import annotations

import hpack
import pytest

from policy_extproc.transport.hpackcache import MAX_REMEMBERED, CachingDecoder

LIMIT = 64 * 1024
# What Envoy sends for each ext_proc stream once its table is warm (captured from Envoy 1.x):
# indexed fields and literals without indexing.
GRPC = [
    (":method", "POST"),
    (":path", "/envoy.service.ext_proc.v3.ExternalProcessor/Process"),
    (":authority", "policy_extproc"),
    (":scheme", "http"),
    ("te", "trailers"),
    ("content-type", "application/grpc"),
    ("x-envoy-internal", "true"),
]


def _pair() -> tuple[CachingDecoder, hpack.Decoder]:
    return CachingDecoder(LIMIT), hpack.Decoder(max_header_list_size=LIMIT)


def _same(cached: CachingDecoder, plain: hpack.Decoder, block: bytes) -> list[tuple[str, str]]:
    got = cached.decode(block)
    want = plain.decode(block)
    assert got == want
    assert cached._decoder.header_table.dynamic_entries == plain.header_table.dynamic_entries
    return got


def test_a_repeated_block_that_changes_no_table_is_decoded_once() -> None:
    cached, plain = _pair()
    enc = hpack.Encoder()
    first = enc.encode(GRPC)  # indexes the fields: changes the table, not remembered
    _same(cached, plain, first)
    assert cached._known == {}
    again = enc.encode(GRPC)  # all indexed now: changes nothing
    _same(cached, plain, again)
    assert list(cached._known) == [again]
    calls = 0
    real = cached._decoder.decode

    def counting(block: bytes) -> object:
        nonlocal calls
        calls += 1
        return real(block)

    cached._decoder.decode = counting  # type: ignore[method-assign]
    for _ in range(3):
        assert _same(cached, plain, again) == GRPC
    assert calls == 0


def test_the_result_is_a_new_list_each_time() -> None:
    cached, _ = _pair()
    enc = hpack.Encoder()
    cached.decode(enc.encode(GRPC))
    block = enc.encode(GRPC)
    one = cached.decode(block)
    one.append(("x-evil", "1"))
    assert cached.decode(block) == GRPC


def test_a_block_that_changes_the_table_forgets_what_was_remembered() -> None:
    cached, plain = _pair()
    enc = hpack.Encoder()
    _same(cached, plain, enc.encode(GRPC))
    steady = enc.encode(GRPC)
    _same(cached, plain, steady)
    assert cached._known
    # A new field indexed: the table moves, so indexes in ``steady`` may mean other fields now.
    _same(cached, plain, enc.encode([*GRPC, ("x-new", "value")]))
    assert cached._known == {}
    _same(cached, plain, steady)


def test_the_same_bytes_against_another_table_decode_to_other_fields() -> None:
    # Dynamic index 62 is whatever was indexed last: the same block means another field once
    # the table moved, and the cache must not answer with the old one.
    cached, plain = _pair()
    enc = hpack.Encoder()
    _same(cached, plain, enc.encode([("x-a", "1")]))
    newest = bytes([0x80 | 62])
    assert _same(cached, plain, newest) == [("x-a", "1")]
    _same(cached, plain, enc.encode([("x-b", "2")]))
    assert _same(cached, plain, newest) == [("x-b", "2")]


def test_a_table_size_update_forgets_what_was_remembered() -> None:
    cached, plain = _pair()
    enc = hpack.Encoder()
    _same(cached, plain, enc.encode(GRPC))
    steady = enc.encode(GRPC)
    _same(cached, plain, steady)
    enc.header_table_size = 0  # the next block starts with a size update that empties the table
    _same(cached, plain, enc.encode([(":method", "POST")]))
    assert cached._known == {}
    with pytest.raises(hpack.HPACKError):
        cached.decode(steady)  # its dynamic indexes are gone: an error, as plain hpack says
    with pytest.raises(hpack.HPACKError):
        plain.decode(steady)


def test_a_failing_block_is_never_remembered_and_fails_every_time() -> None:
    cached, _ = _pair()
    bad = bytes([0x80 | 99])  # an index past both tables
    for _ in range(2):
        with pytest.raises(hpack.HPACKError):
            cached.decode(bad)
    assert cached._known == {}


def test_a_block_failing_after_it_changed_the_table_forgets_what_was_remembered() -> None:
    cached, _ = _pair()
    enc = hpack.Encoder()
    cached.decode(enc.encode(GRPC))
    steady = enc.encode(GRPC)
    cached.decode(steady)
    assert cached._known
    # A literal with incremental indexing (the table changes), then an index past both tables.
    bad = hpack.Encoder().encode([("x-added", "v")]) + bytes([0x80 | 120])
    with pytest.raises(hpack.HPACKError):
        cached.decode(bad)
    assert cached._known == {}


def test_the_blocks_remembered_are_bounded() -> None:
    cached, plain = _pair()
    for i in range(MAX_REMEMBERED + 10):
        # Literal without indexing: changes no table, a distinct block each time.
        block = hpack.Encoder().encode([("x-id", str(i))], huffman=False)
        block = bytes([block[0] & 0x0F]) + block[1:]  # 0000xxxx: without indexing
        assert _same(cached, plain, block) == [("x-id", str(i))]
    assert len(cached._known) == MAX_REMEMBERED
