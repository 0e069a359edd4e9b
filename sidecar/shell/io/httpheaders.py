"""A faster ``http.client.parse_headers`` for plain HTTP response headers (issue 14).

http.client hands every response's header block to the email package's feed parser:
about 80 µs of CPU per response on the bench machine, two responses per 1 KiB fragment
(its GET and its PUT), some 15 % of the storage threads' CPU. The headers S3 answers with
are plain ``Name: value`` lines; for such a block ``parse_headers`` here builds the same
``HTTPMessage`` directly (the same header list, payload, defects and policy: the unit
tests compare the two on every shape they know, and on random ones). Anything else (folded
continuation lines, a line that is not a header, a bare LF, a character the email parser
takes for a line break, a multipart or message/* Content-Type, a message class of the
caller's choosing) goes to the email parser as before, so the result is always what
http.client would have built.

``install()`` puts it in http.client's place (process-wide: http.client looks the function
up at every response, and its answer is the same for every caller); storage installs it
with the direct S3 path.
"""

from __future__ import annotations

import email.parser
import http.client
import re
from typing import Any

_ORIGINAL = http.client.parse_headers
# http.client's own reader of the header lines (its line-length and count limits), private:
# without it (another Python) ``install`` leaves http.client as it is
_read_headers = getattr(http.client, "_read_headers", None)
# header lines, each name as the email parser's headerRE accepts it (printable ASCII but
# ":"), each value without its leading blanks (compat32's header_source_parse)
_BLOCK = re.compile(r"(?:[\x21-\x39\x3b-\x7e]+:[^\r\n]*\r\n)*\r\n")
_HEADER = re.compile(r"([\x21-\x39\x3b-\x7e]+):[ \t]*([^\r\n]*)\r\n")
_NESTED = re.compile("multipart|message", re.IGNORECASE)


def parse_headers(fp: Any, _class: type = http.client.HTTPMessage) -> http.client.HTTPMessage:
    """``http.client.parse_headers``, without the email parser for plain header lines."""
    assert _read_headers is not None  # installed only with it
    lines = _read_headers(fp)
    text = b"".join(lines).decode("iso-8859-1")
    message = _plain(text, len(lines)) if _class is http.client.HTTPMessage else None
    if message is None:
        return email.parser.Parser(_class=_class).parsestr(text)
    return message


def _plain(text: str, lines: int) -> http.client.HTTPMessage | None:
    """The message of a block of ``lines`` ``Name: value`` CRLF lines ended by an empty
    CRLF line, as the email parser (policy compat32) builds it; None for any other block."""
    # nothing str.splitlines (the feed parser's splitter) takes for another line break
    if not _BLOCK.fullmatch(text) or len(text.splitlines()) != lines:
        return None
    headers = _HEADER.findall(text)
    for name, value in headers:
        if _NESTED.search(value) and name.lower() == "content-type":
            return None  # the parser reads a multipart or message/* payload its own way
    message = http.client.HTTPMessage()
    message._headers = headers  # type: ignore[attr-defined]  # as Message.set_raw appends
    message.set_payload("")  # the (empty) rest after the blank line, as the parser sets it
    return message


def install() -> None:
    """Use ``parse_headers`` for every response from now on (idempotent)."""
    if _read_headers is not None:
        http.client.parse_headers = parse_headers  # type: ignore[assignment]


def uninstall() -> None:
    http.client.parse_headers = _ORIGINAL
