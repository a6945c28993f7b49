"""The cluster keyring: seal with the primary, open with any, rotate safely."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodenet.protocol.errors import LocalProtocolError, Undecryptable
from nodenet.protocol.keyring import SEAL_OVERHEAD, ClusterKey, Keyring

K1, K2, K3 = (ClusterKey(bytes([i]) * 32) for i in (1, 2, 3))


@given(st.binary(max_size=2000), st.integers(0, 2))
def test_given_any_plaintext_when_sealed_by_any_primary_then_every_ring_holding_it_opens(
    plaintext, primary_index
):
    primary = (K1, K2, K3)[primary_index]
    sealed = Keyring([K1, K2, K3]).use(primary).seal(plaintext)
    assert len(sealed) == len(plaintext) + SEAL_OVERHEAD
    assert Keyring([K3, K2, K1]).open(sealed) == (plaintext, primary)
    assert Keyring([primary]).open(sealed) == (plaintext, primary)


def test_given_two_seals_of_the_same_plaintext_then_nonces_differ():
    ring = Keyring([K1])
    assert ring.seal(b"x") != ring.seal(b"x")


def test_given_a_ring_without_the_key_when_opening_then_undecryptable():
    with pytest.raises(Undecryptable, match="none of the 2 installed"):
        Keyring([K2, K3]).open(Keyring([K1]).seal(b"hello"))


def test_given_the_rotation_sequence_then_each_step_keeps_old_and_new_nodes_talking():
    old = Keyring([K1])
    installed = old.install(K2)
    assert installed.primary == K1
    assert installed.keys == (K1, K2)
    switched = installed.use(K2)
    assert switched.primary == K2
    # A node that missed the rotation still opens what the others seal, and vice versa,
    # for as long as the others keep the old key installed.
    assert old.open(installed.seal(b"a"))[1] == K1
    assert switched.open(old.seal(b"b"))[1] == K1
    done = switched.remove(K1)
    assert done.keys == (K2,)
    with pytest.raises(Undecryptable):
        done.open(old.seal(b"c"))


def test_given_keyring_misuse_then_clear_local_errors():
    ring = Keyring([K1, K2])
    with pytest.raises(LocalProtocolError, match="primary"):
        ring.remove(K1)
    with pytest.raises(LocalProtocolError, match="not installed"):
        ring.use(K3)
    with pytest.raises(LocalProtocolError, match="not installed"):
        ring.remove(K3)
    with pytest.raises(LocalProtocolError, match="at least one"):
        Keyring([])
    with pytest.raises(LocalProtocolError, match="twice"):
        Keyring([K1, K1])
    assert ring.install(K2) is ring


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("not base64!", "not valid base64"),
        ("clé" + "A" * 41, "not valid base64"),
        ("AAAA", "3 bytes, expected 32"),
        ("A" * 42 + "B=", "not canonical"),  # padding bits set: an alias of "A"*43 + "="
    ],
)
def test_given_bad_key_text_when_parsed_then_clear_error(text, match):
    with pytest.raises(LocalProtocolError, match=match):
        ClusterKey.from_text(text)


def test_given_a_key_then_text_round_trips_and_key_id_hides_it():
    key = ClusterKey.generate()
    assert ClusterKey.from_text(key.text) == key
    assert len(key.text) == 44
    assert len(key.key_id) == 8
    assert key.text not in repr(key)
    assert key.key_id in repr(Keyring([key]))


@pytest.mark.parametrize(
    ("packet", "match"),
    [(b"", "shorter than"), (b"\x01" * 40, "shorter than"), (b"\x02" + b"\x00" * 60, "0x02")],
)
def test_given_short_or_foreign_packets_when_opened_then_undecryptable(packet, match):
    with pytest.raises(Undecryptable, match=match):
        Keyring([K1]).open(packet)


def test_given_a_nonce_source_of_the_wrong_length_when_sealing_then_local_error():
    with pytest.raises(LocalProtocolError, match="nonce source"):
        Keyring([K1], nonce_source=lambda n: b"\x00" * (n - 1)).seal(b"x")


def test_given_a_key_that_is_not_installed_when_sealing_with_it_then_local_error():
    with pytest.raises(LocalProtocolError, match="not installed"):
        Keyring([K1]).seal(b"x", K2)


def test_given_a_ring_when_written_as_text_and_read_back_then_same_keys_in_order():
    ring = Keyring([K2, K1, K3])
    text = ring.to_text()
    assert K1.text in text
    assert Keyring.from_text(text, "ring").keys == (K2, K1, K3)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("# only a comment\n", "holds no cluster key"),
        ("AAAA\n", "ring line 1: cluster key decodes to 3 bytes"),
        ("# keys\nAAAA€\n", "ring line 2: cluster key is not valid base64"),
        (f"{K1.text}\n{K1.text}\n", "ring: the keyring lists the same cluster key twice"),
    ],
)
def test_given_a_bad_keyring_file_when_parsed_then_the_line_is_named(text, match):
    with pytest.raises(LocalProtocolError, match=match):
        Keyring.from_text(text, "ring")
