"""What ``chatledger chat`` sends, read and checked before anything is written: the
message and system instruction as typed, text piped on stdin, and attached files.

A shell hands Python bytes that are not UTF-8 as lone surrogates; each input here is
refused with the byte it holds, before a conversation is created or a log opened.
Attachments are images or PDFs, recognised by their first bytes (not their names),
sent as inline data; everything given to one message is bounded by
:data:`MAX_INPUT_BYTES`.
"""

from __future__ import annotations

import os
import re
from typing import BinaryIO

from ..errors import InvalidInputError
from ..types import Part, PartUnionDict

__all__ = [
    "ATTACHMENT_TYPES",
    "MAX_INPUT_BYTES",
    "Inputs",
    "attachment_type",
    "checked_path",
    "checked_text",
]

#: The most bytes a message may carry from stdin and attachments together: inline data
#: travels base64-encoded (4/3 larger) in a request the Gemini API bounds at 20 MB.
MAX_INPUT_BYTES = 15 * 1024 * 1024

#: What ``-a`` attaches, and the names a person knows them by.
ATTACHMENT_TYPES = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/webp": "WebP",
    "image/heic": "HEIC",
    "image/heif": "HEIF",
    "application/pdf": "PDF",
}

_SURROGATE = re.compile("[\ud800-\udfff]")
_HEIC_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis"}
_HEIF_BRANDS = {b"mif1", b"msf1"}


def checked_text(value: str, what: str) -> str:
    """``value``, unless it holds bytes that are not UTF-8 (a lone surrogate)."""
    found = _SURROGATE.search(value)
    if found is not None:
        code = ord(found.group())
        shown = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
        raise InvalidInputError(
            f"{what} is not valid UTF-8 text ({shown} at character {found.start()}); "
            "give it in UTF-8 (nothing was sent or recorded)"
        )
    return value


def checked_path(value: str, what: str) -> str:
    """``value``, unless no file can have that name (empty, a NUL character, or text the
    file system's encoding cannot carry)."""
    try:
        encoded = os.fsencode(value)
    except UnicodeEncodeError:
        encoded = b"\x00"
    if not encoded or b"\x00" in encoded:
        raise InvalidInputError(f"{what} {value!r:.200} is not a file name")
    return value


def attachment_type(data: bytes) -> str | None:
    """The media type of an image or PDF, from its first bytes (None: not one of
    :data:`ATTACHMENT_TYPES`)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp" and data[8:12] in _HEIC_BRANDS:
        return "image/heic"
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return "image/heif"
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    return None


class Inputs:
    """The parts of one message, gathered and checked before anything is written."""

    def __init__(self) -> None:
        self.parts: list[Part] = []
        self.size = 0

    def _take(self, size: int, what: str) -> None:
        self.size += size
        if self.size > MAX_INPUT_BYTES:
            raise InvalidInputError(
                f"{what} makes this message {self.size:,} bytes or more, over the limit of "
                f"{MAX_INPUT_BYTES:,} bytes for inline data; send less, or upload large files "
                "with the Files API and pass their URI"
            )

    def _read(self, handle: BinaryIO, what: str) -> bytes:
        data = handle.read(MAX_INPUT_BYTES - self.size + 1)
        self._take(len(data), what)
        return data

    def add_stdin(self, handle: BinaryIO) -> None:
        """Text piped on stdin, as a text part (nothing when it is empty)."""
        data = self._read(handle, "the text piped on stdin")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(
                f"the text piped on stdin is not UTF-8 (byte 0x{data[exc.start]:02x} at offset "
                f"{exc.start}); convert it first, or attach a PDF or image with -a"
            ) from None
        if text.strip():
            self.parts.append(Part(text=text))

    def add_file(self, path: str) -> None:
        """An image or PDF, as inline data."""
        what = f"the attachment {path}"
        checked_path(path, "the attachment")
        try:
            with open(path, "rb") as handle:
                data = self._read(handle, what)
        except OSError as exc:
            raise InvalidInputError(f"cannot read {what}: {exc.strerror or exc}") from None
        mime_type = attachment_type(data)
        if mime_type is None:
            kinds = ", ".join(ATTACHMENT_TYPES.values())
            raise InvalidInputError(
                f"{what} is not an image or PDF this command can attach ({kinds}: told "
                "apart by their first bytes, not their names)"
            )
        self.parts.append(Part.from_bytes(data=data, mime_type=mime_type))

    def message(self, text: str) -> str | list[PartUnionDict]:
        """The message to send: ``text`` alone, or the parts gathered, then ``text``."""
        if not self.parts:
            return text
        return [*self.parts, Part(text=text)]
