"""Signed checkpoints (C2SP tlog-checkpoint) and the JSON form of proofs.

A checkpoint is a signed note whose text is::

    <origin>                      the log's name, e.g. chatledger.example/prod
    <tree size>                   decimal, no leading zeros
    <root hash>                   base64 of the 32-byte RFC 9162 root
    time <UTC time>               chatledger's extension line: when it was signed,
                                  e.g. time 2026-12-02T10:11:12.123456Z

followed by a blank line and the signature lines (:mod:`chatledger.proofs.note`). The
``time`` line is an extension line (C2SP allows opaque extension lines after the root);
the Ed25519 signature covers it, so it is as trustworthy as the key. Tools that do not
know it still read the origin, size and root.

Proofs travel as compact JSON (base64 hashes, bottom-up, RFC 9162 order)::

    {"proof":"inclusion","leaf_index":5,"tree_size":8,"path":["...", ...]}
    {"proof":"consistency","old_size":6,"new_size":8,"path":["...", ...]}

An inclusion proof may carry ``"leaf"`` (base64 of the 32-byte leaf input: the event's
hash), ``"event_id"`` and ``"checkpoint"`` (the signed note it was made against). At a
million leaves an inclusion proof is 20 hashes, about 1.1 KB of JSON. The inclusion
proof also has C2SP's text form, ``c2sp.org/tlog-proof@v1`` (:func:`format_tlog_proof`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import IntegrityError, InvalidInputError
from .merkle import (
    HASH_SIZE,
    MAX_PROOF_LENGTH,
    MAX_TREE_SIZE,
    ConsistencyProof,
    InclusionProof,
    TreeHead,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from .note import (
    MAX_NAME_LENGTH,
    MAX_NOTE_BYTES,
    OpenedNote,
    Signer,
    Verifier,
    open_note,
    sign_note,
)

__all__ = [
    "MAX_CHECKPOINT_FILE_BYTES",
    "MAX_PROOF_JSON_BYTES",
    "TIME_EXTENSION",
    "Checkpoint",
    "LoadedProof",
    "SignedCheckpoint",
    "TrustedHead",
    "dump_proof",
    "format_tlog_proof",
    "iter_notes",
    "load_proof",
    "make_checkpoint",
    "open_checkpoint",
    "parse_tlog_proof",
    "read_checkpoint_file",
    "sign_checkpoint",
    "verify_checkpoint_consistency",
    "verify_checkpoint_inclusion",
]

#: The keyword of chatledger's extension line holding the signing time.
TIME_EXTENSION = "time"
#: The largest proof JSON accepted (a proof, an event id and a checkpoint note).
MAX_PROOF_JSON_BYTES = MAX_NOTE_BYTES + 16 * 1024
#: The most extension lines a checkpoint may carry.
MAX_EXTENSIONS = 16
#: The most bytes read from a file of checkpoints (a file sink's whole history).
MAX_CHECKPOINT_FILE_BYTES = 64 * 1024 * 1024

_SIZE = re.compile(r"0|[1-9][0-9]{0,18}")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_TLOG_PROOF_HEADER = "c2sp.org/tlog-proof@v1"


def _check_origin(origin: object) -> None:
    """An origin is non-empty text without control characters (C2SP tlog-checkpoint).

    It SHOULD be a key name (a schema-less URL); Go's checksum database, for one, uses
    ``go.sum database tree``, so spaces are accepted when reading.
    """
    if not isinstance(origin, str) or not origin or len(origin) > MAX_NAME_LENGTH:
        raise InvalidInputError(
            f"a checkpoint's origin is non-empty text of at most {MAX_NAME_LENGTH} characters"
        )
    if any(ord(char) < 0x20 or 0xD800 <= ord(char) <= 0xDFFF for char in origin):
        raise InvalidInputError("a checkpoint's origin cannot contain control characters")


def _format_time(moment: _dt.datetime) -> str:
    utc = moment.astimezone(_dt.timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond:06d}Z"


def _parse_time(text: str) -> _dt.datetime:
    if not _TIME.fullmatch(text):
        raise InvalidInputError(
            f"the checkpoint's time {text!r} is not a UTC time like 2026-12-02T10:11:12.123456Z"
        )
    try:
        parsed = _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        raise InvalidInputError(f"the checkpoint's time {text!r} is not a real date") from None
    return parsed.replace(tzinfo=_dt.timezone.utc)


def _b64_hash(text: object, what: str) -> bytes:
    if not isinstance(text, str) or len(text) != 44:
        raise InvalidInputError(f"the {what} must be the base64 of a 32-byte hash (44 characters)")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise InvalidInputError(f"the {what} is not standard base64") from None
    if len(raw) != HASH_SIZE or base64.b64encode(raw).decode("ascii") != text:
        raise InvalidInputError(f"the {what} is not the canonical base64 of a 32-byte hash")
    return raw


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


@dataclass(frozen=True)
class Checkpoint:
    """A tree head as a log states it: origin, size, root hash, and when it was signed."""

    origin: str
    size: int
    root_hash: bytes
    time: _dt.datetime | None = None
    extensions: tuple[str, ...] = field(default=())
    """Other extension lines, kept verbatim (chatledger writes none)."""

    def __post_init__(self) -> None:
        _check_origin(self.origin)
        TreeHead(self.size, self.root_hash)  # checks the size and the hash
        if self.time is not None and (
            not isinstance(self.time, _dt.datetime) or self.time.tzinfo is None
        ):
            raise InvalidInputError("a checkpoint's time must be a timezone-aware datetime")
        if len(self.extensions) > MAX_EXTENSIONS:
            raise InvalidInputError(f"a checkpoint has at most {MAX_EXTENSIONS} extension lines")
        for line in self.extensions:
            if not isinstance(line, str) or not line or "\n" in line:
                raise InvalidInputError("an extension line is non-empty text without newlines")
            if line.split(" ", 1)[0] == TIME_EXTENSION:
                raise InvalidInputError("the time goes in Checkpoint.time, not an extension line")

    @property
    def head(self) -> TreeHead:
        """The size and root."""
        return TreeHead(self.size, self.root_hash)

    def text(self) -> str:
        """The note text that is signed."""
        lines = [self.origin, str(self.size), _b64(self.root_hash)]
        if self.time is not None:
            lines.append(f"{TIME_EXTENSION} {_format_time(self.time)}")
        lines.extend(self.extensions)
        return "\n".join(lines) + "\n"

    @classmethod
    def parse_text(cls, text: str) -> Checkpoint:
        """Read a checkpoint's note text (signature lines already removed), strictly."""
        if not isinstance(text, str) or not text.endswith("\n"):
            raise InvalidInputError("a checkpoint's text is lines, each ending in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise InvalidInputError(
                "a checkpoint has at least three lines: origin, tree size and root hash"
            )
        if len(lines) > 3 + MAX_EXTENSIONS + 1:
            raise InvalidInputError("the checkpoint has too many extension lines")
        origin, size_text, root_text, *rest = lines
        if not _SIZE.fullmatch(size_text) or int(size_text) > MAX_TREE_SIZE:
            raise InvalidInputError(
                f"the checkpoint's tree size {size_text[:30]!r} is not a decimal number without "
                "leading zeros"
            )
        root_hash = _b64_hash(root_text, "checkpoint's root hash")
        moment: _dt.datetime | None = None
        extensions: list[str] = []
        for line in rest:
            if not line:
                raise InvalidInputError("a checkpoint's extension lines cannot be empty")
            keyword, _, value = line.partition(" ")
            if keyword == TIME_EXTENSION:
                if moment is not None:
                    raise InvalidInputError("the checkpoint has two time lines")
                moment = _parse_time(value)
            else:
                extensions.append(line)
        return cls(origin, int(size_text), root_hash, moment, tuple(extensions))


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint whose signature by a trusted key verified, with the note it came in."""

    checkpoint: Checkpoint
    note: str
    opened: OpenedNote

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root_hash(self) -> bytes:
        return self.checkpoint.root_hash


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> str:
    """The signed note of ``checkpoint``. The key's name must be the checkpoint's origin."""
    if signer.name != checkpoint.origin:
        raise InvalidInputError(
            f"the key is named {signer.name!r} but the checkpoint's origin is "
            f"{checkpoint.origin!r}: a log signs with a key named after its origin"
        )
    return sign_note(checkpoint.text(), [signer])


def make_checkpoint(
    head: TreeHead, signer: Signer, *, time: _dt.datetime | None = None
) -> tuple[Checkpoint, str]:
    """A checkpoint of ``head`` at ``time`` (default now), origin the key's name, and its note."""
    moment = time if time is not None else _dt.datetime.now(_dt.timezone.utc)
    checkpoint = Checkpoint(signer.name, head.size, head.root_hash, moment)
    return checkpoint, sign_checkpoint(checkpoint, signer)


def open_checkpoint(
    note: str | bytes, verifiers: Iterable[Verifier], *, origin: str | None = None
) -> SignedCheckpoint:
    """Verify a signed checkpoint and read it.

    Raises IntegrityError when no trusted key signed it, a trusted signature fails, or
    it is not from ``origin``; InvalidInputError when it is malformed.
    """
    opened = open_note(note, verifiers)
    checkpoint = Checkpoint.parse_text(opened.text)
    if origin is not None and checkpoint.origin != origin:
        raise IntegrityError(
            f"the checkpoint is from the log {checkpoint.origin!r}, not {origin!r}"
        )
    text = note.decode("utf-8") if isinstance(note, bytes) else note
    return SignedCheckpoint(checkpoint, text, opened)


def verify_checkpoint_consistency(
    old: Checkpoint, new: Checkpoint, proof: ConsistencyProof
) -> None:
    """Raise IntegrityError unless ``proof`` shows ``new`` extends ``old`` (same origin)."""
    if old.origin != new.origin:
        raise IntegrityError(f"the checkpoints are of two logs: {old.origin!r} and {new.origin!r}")
    if (proof.old_size, proof.new_size) != (old.size, new.size):
        raise IntegrityError(
            f"the consistency proof is from size {proof.old_size} to {proof.new_size}, but the "
            f"checkpoints have sizes {old.size} and {new.size}"
        )
    verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof.path)


def verify_checkpoint_inclusion(
    checkpoint: Checkpoint, proof: InclusionProof, leaf_input: bytes
) -> None:
    """Raise IntegrityError unless ``proof`` shows ``leaf_input`` is in ``checkpoint``'s tree."""
    if proof.tree_size != checkpoint.size:
        raise IntegrityError(
            f"the inclusion proof is for a tree of {proof.tree_size} leaves, but the checkpoint "
            f"has {checkpoint.size}"
        )
    verify_inclusion(
        leaf_hash(leaf_input), proof.leaf_index, proof.tree_size, proof.path, checkpoint.root_hash
    )


# -- files of checkpoints -----------------------------------------------------------------


def iter_notes(lines: Iterable[str]) -> Iterator[str]:
    """Split text holding signed notes one after another (as a file sink appends them).

    A note is body lines, a blank line, then signature lines (``— ...``); the first line
    after its signatures that is not one starts the next note, and blank lines between
    notes are skipped. Each note is bounded by MAX_NOTE_BYTES.
    """
    current: list[str] = []
    size = 0
    in_signatures = False
    for raw in lines:
        line = raw if raw.endswith("\n") else raw + "\n"
        is_signature = line.startswith("\u2014 ")
        if in_signatures and not is_signature:
            yield "".join(current)
            current, size, in_signatures = [], 0, False
        if not current and line == "\n":
            continue
        if is_signature and current and current[-1] == "\n":
            in_signatures = True
        current.append(line)
        size += len(line.encode("utf-8"))
        if size > MAX_NOTE_BYTES:
            raise InvalidInputError(
                f"a note in the checkpoint file is larger than {MAX_NOTE_BYTES} bytes"
            )
    if current:
        if not in_signatures:
            raise InvalidInputError("the checkpoint file ends with an unsigned or cut-off note")
        yield "".join(current)


def read_checkpoint_file(
    path: str | os.PathLike[str],
    verifiers: Iterable[Verifier],
    *,
    origin: str | None = None,
) -> list[SignedCheckpoint]:
    """Every checkpoint in a file (one note, or many appended), each verified, oldest first."""
    trusted = list(verifiers)
    result = []
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            for note in iter_notes(handle):
                result.append(open_checkpoint(note, trusted, origin=origin))
    except FileNotFoundError:
        raise InvalidInputError(f"no checkpoint file at {path}") from None
    except UnicodeDecodeError:
        raise InvalidInputError(f"the checkpoint file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read the checkpoint file {path}: {exc.strerror}") from None
    if not result:
        raise InvalidInputError(f"the checkpoint file {path} holds no checkpoint")
    return result


# -- proofs as JSON -------------------------------------------------------------------------

_INCLUSION_KEYS = {"proof", "leaf_index", "tree_size", "path"}
_INCLUSION_OPTIONAL = {"leaf", "event_id", "checkpoint"}
_CONSISTENCY_KEYS = {"proof", "old_size", "new_size", "path"}
_CONSISTENCY_OPTIONAL = {"checkpoint", "old_checkpoint"}


def dump_proof(
    proof: InclusionProof | ConsistencyProof,
    *,
    leaf: bytes | None = None,
    event_id: str | None = None,
    checkpoint: str | None = None,
    old_checkpoint: str | None = None,
) -> str:
    """The compact JSON of a proof (one line, no spaces), with optional context."""
    document: dict[str, Any]
    if isinstance(proof, InclusionProof):
        document = {
            "proof": "inclusion",
            "leaf_index": proof.leaf_index,
            "tree_size": proof.tree_size,
            "path": [_b64(value) for value in proof.path],
        }
        if leaf is not None:
            TreeHead(0, leaf)  # a 32-byte hash
            document["leaf"] = _b64(leaf)
        if event_id is not None:
            document["event_id"] = event_id
    elif isinstance(proof, ConsistencyProof):
        if leaf is not None or event_id is not None:
            raise InvalidInputError("a consistency proof has no leaf or event")
        document = {
            "proof": "consistency",
            "old_size": proof.old_size,
            "new_size": proof.new_size,
            "path": [_b64(value) for value in proof.path],
        }
        if old_checkpoint is not None:
            document["old_checkpoint"] = old_checkpoint
    else:
        raise InvalidInputError("dump_proof takes an InclusionProof or a ConsistencyProof")
    if checkpoint is not None:
        document["checkpoint"] = checkpoint
    return json.dumps(document, separators=(",", ":"), ensure_ascii=True)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidInputError(f"the proof repeats the key {key!r}")
        result[key] = value
    return result


def _count(document: dict[str, Any], key: str) -> int:
    value = document[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"the proof's {key} must be an integer")
    if not 0 <= value <= MAX_TREE_SIZE:
        raise InvalidInputError(f"the proof's {key} {value} is out of range")
    return value


def _path(document: dict[str, Any]) -> tuple[bytes, ...]:
    path = document["path"]
    if not isinstance(path, list):
        raise InvalidInputError("the proof's path must be a list of base64 hashes")
    if len(path) > MAX_PROOF_LENGTH:
        raise InvalidInputError(f"the proof's path has more than {MAX_PROOF_LENGTH} hashes")
    return tuple(_b64_hash(value, f"proof path hash {i}") for i, value in enumerate(path))


def _note_field(document: dict[str, Any], key: str) -> str | None:
    value = document.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_NOTE_BYTES:
        raise InvalidInputError(f"the proof's {key} must be a signed note (text)")
    return value


@dataclass(frozen=True)
class LoadedProof:
    """A proof read from JSON, with whatever context it carried."""

    proof: InclusionProof | ConsistencyProof
    leaf: bytes | None = None
    event_id: str | None = None
    checkpoint: str | None = None
    old_checkpoint: str | None = None


def load_proof(text: str | bytes) -> LoadedProof:
    """Read a proof's JSON strictly (known keys only, canonical base64, bounded sizes)."""
    if len(text) > MAX_PROOF_JSON_BYTES:
        raise InvalidInputError(f"the proof is larger than {MAX_PROOF_JSON_BYTES} bytes")
    try:
        document = json.loads(text, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, InvalidInputError):
            raise
        raise InvalidInputError("the proof is not valid JSON") from None
    if not isinstance(document, dict):
        raise InvalidInputError("a proof is a JSON object")
    kind = document.get("proof")
    if kind == "inclusion":
        required, optional = _INCLUSION_KEYS, _INCLUSION_OPTIONAL
    elif kind == "consistency":
        required, optional = _CONSISTENCY_KEYS, _CONSISTENCY_OPTIONAL
    else:
        raise InvalidInputError('a proof\'s "proof" is "inclusion" or "consistency"')
    keys = set(document)
    if not required <= keys:
        raise InvalidInputError(f"the {kind} proof lacks {sorted(required - keys)}")
    if keys - required - optional:
        raise InvalidInputError(
            f"the {kind} proof has unknown keys {sorted(keys - required - optional)}"
        )
    path = _path(document)
    checkpoint = _note_field(document, "checkpoint")
    if kind == "consistency":
        old, new = _count(document, "old_size"), _count(document, "new_size")
        if old > new:
            raise InvalidInputError("a consistency proof's old_size is larger than its new_size")
        return LoadedProof(
            ConsistencyProof(old, new, path),
            checkpoint=checkpoint,
            old_checkpoint=_note_field(document, "old_checkpoint"),
        )
    index, size = _count(document, "leaf_index"), _count(document, "tree_size")
    if index >= size:
        raise InvalidInputError(f"leaf {index} is not in a tree of {size} leaves")
    leaf = _b64_hash(document["leaf"], "proof's leaf") if "leaf" in document else None
    event_id = document.get("event_id")
    if event_id is not None and (not isinstance(event_id, str) or not 0 < len(event_id) <= 200):
        raise InvalidInputError("the proof's event_id must be a string of 1 to 200 characters")
    return LoadedProof(InclusionProof(index, size, path), leaf, event_id, checkpoint)


# -- C2SP tlog-proof ------------------------------------------------------------------------


def format_tlog_proof(
    proof: InclusionProof, checkpoint_note: str, extra: bytes | None = None
) -> str:
    """The ``c2sp.org/tlog-proof@v1`` text of an inclusion proof with its checkpoint."""
    lines = [_TLOG_PROOF_HEADER]
    if extra is not None:
        lines.append(f"extra {_b64(extra)}")
    lines.append(f"index {proof.leaf_index}")
    lines.extend(_b64(value) for value in proof.path)
    return "\n".join(lines) + "\n\n" + checkpoint_note


def parse_tlog_proof(
    text: str, verifiers: Iterable[Verifier], *, origin: str | None = None
) -> tuple[InclusionProof, SignedCheckpoint, bytes | None]:
    """Read a ``c2sp.org/tlog-proof@v1`` proof; its checkpoint is verified, the proof is not."""
    if not isinstance(text, str) or len(text) > MAX_PROOF_JSON_BYTES:
        raise InvalidInputError("a tlog-proof is text of bounded size")
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise InvalidInputError("a tlog-proof has a blank line before its checkpoint")
    lines = head.split("\n")
    if lines[0] != _TLOG_PROOF_HEADER:
        raise InvalidInputError(f"a tlog-proof starts with {_TLOG_PROOF_HEADER}")
    position = 1
    extra = None
    if position < len(lines) and lines[position].startswith("extra "):
        try:
            extra = base64.b64decode(lines[position][6:].encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise InvalidInputError("the tlog-proof's extra data is not base64") from None
        position += 1
    if position >= len(lines) or not lines[position].startswith("index "):
        raise InvalidInputError("a tlog-proof names the entry's index")
    index_text = lines[position][6:]
    if not _SIZE.fullmatch(index_text):
        raise InvalidInputError("the tlog-proof's index is not a decimal number")
    path = lines[position + 1 :]
    if len(path) > MAX_PROOF_LENGTH:
        raise InvalidInputError(f"the tlog-proof has more than {MAX_PROOF_LENGTH} hashes")
    hashes = tuple(_b64_hash(value, f"tlog-proof hash {i}") for i, value in enumerate(path))
    signed = open_checkpoint(note, verifiers, origin=origin)
    index = int(index_text)
    if index >= signed.size:
        raise IntegrityError(
            f"the tlog-proof names entry {index} of a checkpoint of {signed.size} entries"
        )
    return InclusionProof(index, signed.size, hashes), signed, extra


# -- a client's last verified checkpoint ----------------------------------------------------


class TrustedHead:
    """The last checkpoint a client verified, kept in a file it alone writes.

    As immudb's clients do: every newer checkpoint must come with a consistency proof
    from this one, and only then replaces it. A log that was rolled back, or rewritten
    before the trusted size, can never again satisfy the client.
    """

    def __init__(
        self, path: str | os.PathLike[str], verifiers: Iterable[Verifier], origin: str
    ) -> None:
        self.path = Path(path)
        self.verifiers = list(verifiers)
        _check_origin(origin)
        self.origin = origin

    def current(self) -> SignedCheckpoint | None:
        """The trusted checkpoint, verified again from the file; None before the first."""
        if not self.path.exists():
            return None
        return read_checkpoint_file(self.path, self.verifiers, origin=self.origin)[-1]

    def advance(self, note: str, proof: ConsistencyProof | None = None) -> SignedCheckpoint:
        """Trust ``note`` if it is signed and extends the current checkpoint by ``proof``.

        The first checkpoint needs no proof (trust on first use). Raises IntegrityError
        and keeps the current checkpoint when anything fails.
        """
        new = open_checkpoint(note, self.verifiers, origin=self.origin)
        old = self.current()
        if old is not None:
            if proof is None:
                if new.size == old.size and new.root_hash == old.root_hash:
                    proof = ConsistencyProof(old.size, new.size, ())
                else:
                    raise IntegrityError(
                        f"a checkpoint at size {new.size} needs a consistency proof from the "
                        f"trusted size {old.size}"
                    )
            verify_checkpoint_consistency(old.checkpoint, new.checkpoint, proof)
        self._write(new.note)
        return new

    def _write(self, note: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".trusted-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                handle.write(note)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
