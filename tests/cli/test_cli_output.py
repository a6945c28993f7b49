"""Formatting helpers: columns, durations, tags, colour only for terminals, and the
libsodium-free key checks agreeing with the protocol's."""

from __future__ import annotations

import io

import pytest

from nodenet.cli.keytext import check_key_text, key_id
from nodenet.cli.output import (
    columns,
    format_duration,
    format_entries,
    format_peers,
    format_tags,
    printable,
    value_size,
    wants_colour,
)
from nodenet.protocol.keyring import ClusterKey


def test_columns_are_aligned_two_spaces_apart_without_trailing_blanks():
    assert columns(["A", "LONGER", "C"], [["xxx", "y", ""], ["z", "", "w"]]) == (
        "A    LONGER  C\nxxx  y\nz" + " " * 12 + "w"
    )


def test_wide_characters_count_twice_for_alignment():
    assert columns(["N", "X"], [["東京", "1"], ["ab", "2"]]).splitlines() == [
        "N     X",
        "東京  1",
        "ab    2",
    ]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59.9, "59s"), (61, "1m 1s"), (3725, "1h 2m"), (90000, "1d 1h"), (-3, "0s")],
)
def test_durations_are_rough_and_human(seconds: float, text: str):
    assert format_duration(seconds) == text


def test_tags_are_sorted_and_leave_out_the_name():
    assert format_tags({"role": "web", "name": "n", "dc": "eu"}) == "dc=eu,role=web"
    assert format_tags({"name": "n"}) == ""


def test_given_colour_then_only_the_status_cell_is_styled_and_alignment_kept():
    peers = [
        {"name": "a", "short_id": "1", "address": "x", "status": "dead", "tags": {"k": "v"}},
        {"name": "bb", "short_id": "2", "address": "y", "status": "alive", "tags": {}},
    ]
    plain = format_peers(peers)
    coloured = format_peers(peers, colour=True)
    assert "\x1b[31mdead\x1b[0m" in coloured
    assert "\x1b[" not in plain
    stripped = coloured.replace("\x1b[31m", "").replace("\x1b[32m", "").replace("\x1b[0m", "")
    assert stripped == plain


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_for_a_terminal_without_no_color_or_dumb_term():
    assert wants_colour(_Tty(), {})
    assert not wants_colour(io.StringIO(), {})
    assert not wants_colour(_Tty(), {"NO_COLOR": ""})
    assert not wants_colour(_Tty(), {"TERM": "dumb"})


def test_key_checks_agree_with_the_protocols_cluster_key():
    for _ in range(20):
        key = ClusterKey.generate()
        assert check_key_text(key.text) == key.raw
        assert key_id(key.raw) == key.key_id


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("not base64!", "not a base64"),
        ("AAAA", "decodes to 3 bytes"),
        (ClusterKey(bytes(32)).text[:-2] + "B=", "not canonical"),
    ],
)
def test_mistyped_keys_are_rejected_saying_why(text: str, why: str):
    with pytest.raises(ValueError, match=why):
        check_key_text(text)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("app/config", "app/config"),
        ("with space", "with space"),
        ("東京", "東京"),
        ("two\nlines\ttab", "two\\nlines\\ttab"),
        ("c1\x85 and \u2028", "c1\\x85 and \\u2028"),
    ],
)
def test_printable_escapes_only_what_would_break_a_line_or_a_column(text: str, shown: str):
    assert printable(text) == shown


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 255, 65536])
def test_value_size_is_the_decoded_length_of_value_b64(size: int):
    import base64

    assert value_size({"value_b64": base64.b64encode(b"x" * size).decode()}) == size


def test_given_a_key_with_a_newline_when_ls_formats_it_then_the_row_stays_one_line():
    entry = {"key": "a\nb", "value_b64": "", "author": "A" * 52, "time": "t"}
    assert format_entries([entry]).splitlines()[1] == "a\\nb  0     AAAAAAAAAA  t"
