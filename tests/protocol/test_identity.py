"""Node ids, their text forms, the key file format, and the signature helpers."""

from __future__ import annotations

import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.strategies import node_ids

from nodenet.protocol.errors import LocalProtocolError
from nodenet.protocol.identity import (
    CLAIM_CONTEXT,
    ENVELOPE_CONTEXT,
    CachingVerifier,
    KeyFileError,
    NodeId,
    check_key_file_mode,
    format_key_file,
    node_id_of,
    parse_key_file,
    resolve_node_id,
    short_ids,
    sign,
    verify,
)

KEY = nacl.signing.SigningKey(bytes(range(32)))


@given(node_ids)
def test_given_any_node_id_when_printed_then_52_lowercase_base32_chars_that_parse_back(node):
    text = node.text
    assert len(text) == 52
    assert text == text.lower()
    assert set(text) <= set("abcdefghijklmnopqrstuvwxyz234567")
    assert NodeId.from_text(text) == node
    assert NodeId.from_text(text.upper()) == node
    assert node.short == text[:10]


@pytest.mark.parametrize(
    ("text", "match"),
    [("abc", "expected 52"), ("1" * 52, "not base32"), ("", "expected 52")],
)
def test_given_bad_node_id_text_when_parsed_then_clear_error(text, match):
    with pytest.raises(LocalProtocolError, match=match):
        NodeId.from_text(text)


def test_given_wrong_length_bytes_when_making_a_node_id_then_error():
    with pytest.raises(LocalProtocolError, match="32 bytes"):
        NodeId(b"\x00" * 31)


def test_given_ids_sharing_a_long_prefix_when_shortened_then_each_is_unique():
    a = NodeId(b"\x00" * 31 + b"\x01")
    b = NodeId(b"\x00" * 31 + b"\x02")
    c = NodeId(b"\xff" * 32)
    shorts = short_ids([a, b, c])
    assert len(set(shorts.values())) == 3
    assert shorts[c] == c.text[:10]
    assert len(shorts[a]) > 10
    for node, prefix in shorts.items():
        assert resolve_node_id(prefix, [a, b, c]) == node


@given(st.lists(node_ids, min_size=1, max_size=30, unique=True))
def test_given_any_ids_when_shortened_then_prefixes_are_unique_and_resolve(ids):
    shorts = short_ids(ids)
    assert len(set(shorts.values())) == len(ids)
    for node, prefix in shorts.items():
        assert len(prefix) >= 10
        assert resolve_node_id(prefix, ids) == node


def test_given_an_ambiguous_or_unknown_prefix_when_resolved_then_clear_error():
    a = NodeId(b"\x00" * 31 + b"\x01")
    b = NodeId(b"\x00" * 31 + b"\x02")
    with pytest.raises(LocalProtocolError, match="ambiguous"):
        resolve_node_id("aaaa", [a, b])
    with pytest.raises(LocalProtocolError, match="no known node"):
        resolve_node_id("zzzz", [a, b])


def test_given_a_key_when_formatted_and_parsed_then_same_key_and_id_in_comment():
    content = format_key_file(KEY)
    assert node_id_of(KEY).text.encode() in content
    assert bytes(parse_key_file(content, "k")) == bytes(KEY)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "exactly one"),
        (b"\xff\xfe", "non-ASCII"),
        (b"ssh-ed25519 AAAA\n", "unknown format"),
        (b"nodenet-ed25519-seed-v1 !!!!\n", "not valid base64"),
        (b"nodenet-ed25519-seed-v1 AAAA\n", "3 bytes, expected 32"),
        (b"nodenet-ed25519-seed-v1 AAAA\nnodenet-ed25519-seed-v1 AAAA\n", "found 2"),
    ],
)
def test_given_a_malformed_key_file_when_parsed_then_error_names_the_file(content, match):
    with pytest.raises(KeyFileError, match=match) as info:
        parse_key_file(content, "/var/lib/nodenet/node.key")
    assert "/var/lib/nodenet/node.key" in str(info.value)


@pytest.mark.parametrize("mode", [0o100640, 0o100604, 0o100660, 0o100644, 0o100610, 0o100601])
def test_given_a_group_or_world_accessible_key_file_when_checked_then_refused(mode):
    with pytest.raises(KeyFileError, match="chmod 600"):
        check_key_file_mode(mode, "/k")


@pytest.mark.parametrize("mode", [0o100600, 0o100400])
def test_given_an_owner_only_key_file_when_checked_then_accepted(mode):
    check_key_file_mode(mode, "/k")


def test_given_a_signature_when_verified_with_another_context_or_key_then_false():
    node = node_id_of(KEY)
    signature = sign(KEY, CLAIM_CONTEXT, b"data")
    assert verify(node, CLAIM_CONTEXT, b"data", signature)
    assert not verify(node, ENVELOPE_CONTEXT, b"data", signature)
    assert not verify(node, CLAIM_CONTEXT, b"datA", signature)
    other = node_id_of(nacl.signing.SigningKey(b"\x09" * 32))
    assert not verify(other, CLAIM_CONTEXT, b"data", signature)
    assert not verify(node, CLAIM_CONTEXT, b"data", b"short")


def test_given_a_cached_signature_when_reused_for_other_data_then_still_rejected():
    verifier = CachingVerifier(capacity=2)
    node = node_id_of(KEY)
    signature = sign(KEY, CLAIM_CONTEXT, b"data")
    assert verifier(node, CLAIM_CONTEXT, b"data", signature)
    assert verifier(node, CLAIM_CONTEXT, b"data", signature)
    assert (verifier.hits, verifier.misses) == (1, 1)
    assert not verifier(node, CLAIM_CONTEXT, b"other", signature)
    assert not verifier(node, ENVELOPE_CONTEXT, b"data", signature)


def test_given_a_full_cache_when_more_signatures_arrive_then_oldest_evicted_and_bounded():
    verifier = CachingVerifier(capacity=2)
    node = node_id_of(KEY)
    signatures = [sign(KEY, CLAIM_CONTEXT, bytes([i])) for i in range(3)]
    for i, s in enumerate(signatures):
        assert verifier(node, CLAIM_CONTEXT, bytes([i]), s)
    assert verifier(node, CLAIM_CONTEXT, b"\x00", signatures[0])  # evicted: verified again
    assert verifier.misses == 4


def test_given_a_non_canonical_spelling_of_an_id_when_parsed_then_refused():
    node = NodeId(b"\x00" * 32)
    alias = node.text[:-1] + "b"  # differs only in the padding bits of the last character
    assert base64_alias_decodes_equal(alias, node)
    with pytest.raises(LocalProtocolError, match="canonical"):
        NodeId.from_text(alias)


def base64_alias_decodes_equal(alias: str, node: NodeId) -> bool:
    import base64

    return base64.b32decode(alias.upper() + "====") == bytes(node)


def test_given_indented_comments_in_a_key_file_then_ignored():
    content = b"  # indented comment\n" + format_key_file(KEY)
    assert bytes(parse_key_file(content, "k")) == bytes(KEY)
