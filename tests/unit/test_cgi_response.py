"""The CGI response header parser: bytes in, a response head (or a one-line reason) out."""

from __future__ import annotations

import pytest

from fwatchdog.modes.forking.cgi_response import (
    HEADER_BLOCK_LIMIT,
    CgiHead,
    CgiHeaderError,
    CgiHeaderParser,
)


def parse(output: bytes) -> CgiHead:
    parser = CgiHeaderParser()
    head = parser.feed(output)
    return head if head is not None else parser.end()


def test_content_type_only_gives_200_with_that_header_and_the_body() -> None:
    head = parse(b"Content-Type: text/plain\n\nhello\n")
    assert head.status == 200
    assert head.headers == [("Content-Type", "text/plain")]
    assert head.body == b"hello\n"


def test_crlf_and_lf_line_ends_are_both_accepted() -> None:
    head = parse(b"Status: 201 Created\r\nX-One: 1\nX-Two: 2\r\n\r\nbody")
    assert head.status == 201
    assert head.headers == [("X-One", "1"), ("X-Two", "2")]
    assert head.body == b"body"


def test_status_line_sets_the_status_and_is_not_a_header() -> None:
    head = parse(b"Status: 404 Not Found\nContent-Type: text/html\n\n")
    assert head.status == 404
    assert head.headers == [("Content-Type", "text/html")]


def test_status_without_reason_phrase_is_accepted() -> None:
    assert parse(b"Status: 204\n\n").status == 204


def test_location_without_status_gives_302() -> None:
    head = parse(b"Location: https://example.com/next\n\n")
    assert head.status == 302
    assert head.headers == [("Location", "https://example.com/next")]


def test_location_with_status_keeps_that_status() -> None:
    assert parse(b"Status: 303 See Other\nLocation: /x\n\n").status == 303


def test_repeated_fields_are_all_kept_in_order() -> None:
    head = parse(b"Set-Cookie: a=1; Path=/\nSet-Cookie: b=2; HttpOnly\n\n")
    assert head.headers == [("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; HttpOnly")]


def test_field_values_are_trimmed_and_may_be_empty() -> None:
    head = parse(b"X-Padded: \t spaced out \t\nX-Empty:\n\n")
    assert head.headers == [("X-Padded", "spaced out"), ("X-Empty", "")]


def test_framing_fields_are_left_to_the_http_layer() -> None:
    head = parse(
        b"Content-Length: 5\nTransfer-Encoding: chunked\nConnection: close\n"
        b"Keep-Alive: timeout=5\nDate: Mon, 01 Jan 2001 00:00:00 GMT\nX-Kept: yes\n\nhello"
    )
    assert head.headers == [("X-Kept", "yes")]
    assert head.content_length == 5


def test_header_block_split_across_many_feeds_byte_by_byte() -> None:
    output = b"Status: 202 Accepted\r\nContent-Type: application/json\r\n\r\n{}"
    parser = CgiHeaderParser()
    results = [parser.feed(output[i : i + 1]) for i in range(len(output))]
    heads = [result for result in results if result is not None]
    assert len(heads) == 1
    assert heads[0].status == 202
    # The head is complete at the empty line: the body byte(s) after it come in later feeds.
    assert results.index(heads[0]) == output.index(b"\r\n\r\n") + 3


def test_body_bytes_in_the_same_feed_as_the_empty_line_are_returned() -> None:
    parser = CgiHeaderParser()
    assert parser.feed(b"Content-Type: text/plain\n") is None
    head = parser.feed(b"\nfirst body bytes")
    assert head is not None
    assert head.body == b"first body bytes"


def test_binary_body_after_the_head_is_untouched() -> None:
    body = bytes(range(256)) * 4
    assert parse(b"Content-Type: application/octet-stream\n\n" + body).body == body


def test_empty_line_first_means_no_headers_and_status_200() -> None:
    head = parse(b"\njust a body")
    assert (head.status, head.headers, head.body) == (200, [], b"just a body")


def test_output_ending_after_complete_header_lines_is_a_head_with_no_body() -> None:
    parser = CgiHeaderParser()
    assert parser.feed(b"Status: 204 No Content\n") is None
    head = parser.end()
    assert (head.status, head.body) == (204, b"")


def test_output_ending_in_a_header_line_without_newline_is_still_that_header() -> None:
    parser = CgiHeaderParser()
    assert parser.feed(b"Location: /elsewhere") is None
    assert parser.end().status == 302


def test_no_output_at_all_is_an_error() -> None:
    with pytest.raises(CgiHeaderError, match="no CGI header block"):
        CgiHeaderParser().end()


def test_plain_text_output_is_refused_on_its_first_line() -> None:
    parser = CgiHeaderParser()
    with pytest.raises(CgiHeaderError, match="'hello world' is not a CGI header"):
        parser.feed(b"hello world\nmore")


def test_json_output_is_not_mistaken_for_a_header() -> None:
    with pytest.raises(CgiHeaderError, match="not a CGI header"):
        parse(b'{"a": 1}\n')


def test_field_name_with_a_space_is_refused() -> None:
    with pytest.raises(CgiHeaderError, match="not a CGI header"):
        parse(b"Content Type: text/plain\n\n")


def test_folded_continuation_line_is_refused() -> None:
    with pytest.raises(CgiHeaderError, match="folded"):
        parse(b"X-Long: one\n  two\n\n")


def test_control_character_in_a_value_is_refused() -> None:
    with pytest.raises(CgiHeaderError, match="control character"):
        parse(b"X-Bad: a\x00b\n\n")


def test_bare_carriage_return_inside_a_line_is_refused() -> None:
    with pytest.raises(CgiHeaderError, match="control character"):
        parse(b"X-Bad: a\rInjected: yes\n\n")


@pytest.mark.parametrize("status", [b"abc", b"20", b"2000", b"099", b"600", b"100 Continue", b""])
def test_status_that_is_not_a_final_three_digit_code_is_refused(status: bytes) -> None:
    with pytest.raises(CgiHeaderError, match="not a status code"):
        parse(b"Status: " + status + b"\n\n")


def test_two_status_lines_are_refused() -> None:
    with pytest.raises(CgiHeaderError, match="two Status lines"):
        parse(b"Status: 200 OK\nStatus: 404 Not Found\n\n")


def test_content_length_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(CgiHeaderError, match="Content-Length"):
        parse(b"Content-Length: five\n\n")


def test_header_block_up_to_the_limit_is_accepted() -> None:
    line = b"X-Filler: " + b"a" * 1000 + b"\n"
    count = (HEADER_BLOCK_LIMIT - 1) // len(line)
    block = line * count + b"\n"
    assert len(block) <= HEADER_BLOCK_LIMIT
    head = parse(block + b"body")
    assert len(head.headers) == count
    assert head.body == b"body"


def test_header_block_larger_than_64_kib_is_refused() -> None:
    line = b"X-Filler: " + b"a" * 1000 + b"\n"
    parser = CgiHeaderParser()
    with pytest.raises(CgiHeaderError, match="larger than 64 KiB"):
        for _ in range(70):
            parser.feed(line)


def test_endless_line_without_newline_is_refused_past_the_limit() -> None:
    parser = CgiHeaderParser()
    assert parser.feed(b"X-Endless: " + b"a" * 60000) is None
    with pytest.raises(CgiHeaderError, match="larger than 64 KiB"):
        parser.feed(b"a" * 10000)


def test_large_body_arriving_with_the_head_does_not_count_against_the_limit() -> None:
    body = b"x" * (HEADER_BLOCK_LIMIT * 4)
    assert parse(b"Content-Type: text/plain\n\n" + body).body == body


def test_default_content_type_is_added_only_when_the_program_set_none() -> None:
    assert parse(b"Status: 200\n\n").headers_with_content_type("text/plain") == [
        ("Content-Type", "text/plain")
    ]
    own = parse(b"content-type: application/json\n\n")
    assert own.headers_with_content_type("text/plain") == [("content-type", "application/json")]


def test_obs_text_in_a_value_passes_through_as_latin_1() -> None:
    head = parse(b"X-Name: caf\xc3\xa9\n\n")
    assert head.headers[0][1].encode("latin-1") == b"caf\xc3\xa9"
