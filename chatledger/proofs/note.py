"""C2SP signed notes with Ed25519 keys: sign, parse strictly, verify; load and make keys.

A signed note (c2sp.org/signed-note, Go's ``golang.org/x/mod/sumdb/note``) is a UTF-8
text ending in a newline, a blank line, then one or more signature lines::

    — <key name> <base64(4-byte key id || Ed25519 signature of the text)>

The key id is ``SHA-256(key name || "\\n" || 0x01 || 32-byte public key)[:4]``. A verifier
key is written ``<name>+<8 hex digits of the key id>+<base64(0x01 || public key)>``.

Private keys are read in two forms:

- ``PRIVATE+KEY+<name>+<key id>+<base64(0x01 || 32-byte seed)>``: Go's note format, one
  line that carries the key's name and id, so it moves unchanged between chatledger, Go's
  ``note`` package and the tools built on it (witnesses, litetlog). :func:`generate_key`
  writes this form.
- PEM PKCS#8 (``-----BEGIN PRIVATE KEY-----``, as ``openssl genpkey -algorithm ed25519``
  writes it), with the key name given separately.

A key is read from a file (which must not be readable by other users) or from an
environment variable holding the key text. Nothing here ever prints, logs or puts in an
error message the private key; loaded keys are registered with
:func:`chatledger.errors.register_secret` so that any text chatledger shows masks them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import re
import stat
import tempfile
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import IntegrityError, InvalidInputError, register_secret

__all__ = [
    "ALG_ED25519",
    "DEFAULT_KEY_ENV",
    "MAX_NOTE_BYTES",
    "MAX_SIGNATURES",
    "Note",
    "NoteSignature",
    "OpenedNote",
    "Signer",
    "Verifier",
    "check_key_name",
    "generate_key",
    "key_id",
    "load_signer",
    "load_verifiers",
    "open_note",
    "parse_note",
    "sign_note",
    "write_private_key",
]

#: The signature type byte of Ed25519 in signed notes.
ALG_ED25519 = 0x01
#: The largest note accepted (text and signatures), in bytes.
MAX_NOTE_BYTES = 64 * 1024
#: The most signature lines a note may carry (Go's limit; C2SP requires at least 16).
MAX_SIGNATURES = 100
#: The longest key name accepted, in characters.
MAX_NAME_LENGTH = 1024
#: The environment variable :func:`load_signer` reads when given no file.
DEFAULT_KEY_ENV = "CHATLEDGER_SIGNING_KEY"
#: The largest key file read.
MAX_KEY_FILE_BYTES = 16 * 1024

_SIG_PREFIX = "\u2014 "  # em dash, space
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


def check_key_name(name: object, what: str = "key name") -> str:
    """Return ``name`` if it is a valid note key name, else raise InvalidInputError.

    Non-empty, at most MAX_NAME_LENGTH characters, no Unicode spaces, no ``+``, no
    control characters (C2SP signed-note).
    """
    if not isinstance(name, str):
        raise InvalidInputError(f"the {what} must be a string, not {type(name).__name__}")
    if not name:
        raise InvalidInputError(f"the {what} is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInputError(f"the {what} is longer than {MAX_NAME_LENGTH} characters")
    for char in name:
        if char == "+" or char.isspace() or unicodedata.category(char) in ("Zs", "Zl", "Zp"):
            raise InvalidInputError(
                f"the {what} {name!r} holds {char!r}: names cannot contain spaces or '+' "
                "(use a schema-less URL such as example.com/chatledger)"
            )
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise InvalidInputError(f"the {what} {name!r} holds a control character")
    return name


def key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte id of an Ed25519 key: ``SHA-256(name || 0x0A || 0x01 || public_key)[:4]``."""
    material = name.encode("utf-8") + b"\n" + bytes([ALG_ED25519]) + public_key
    return hashlib.sha256(material).digest()[:4]


def _b64decode(text: str, what: str) -> bytes:
    """Strict standard base64: the alphabet, padding, and the canonical encoding only."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise InvalidInputError(f"the {what} is not standard base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise InvalidInputError(f"the {what} is not in canonical base64")
    return raw


class Verifier:
    """A trusted Ed25519 public key with its note name and key id."""

    __slots__ = ("_key", "key_id", "name", "public_key")

    def __init__(self, name: str, public_key: bytes) -> None:
        check_key_name(name)
        if not isinstance(public_key, bytes) or len(public_key) != 32:
            raise InvalidInputError("an Ed25519 public key is 32 bytes")
        self.name = name
        self.public_key = public_key
        self.key_id = key_id(name, public_key)
        self._key = Ed25519PublicKey.from_public_bytes(public_key)

    @classmethod
    def parse(cls, text: str) -> Verifier:
        """Read a verifier key ``<name>+<hex key id>+<base64(0x01 || public key)>``."""
        if not isinstance(text, str):
            raise InvalidInputError("a verifier key must be a string")
        text = text.strip()
        if len(text) > MAX_NAME_LENGTH + 100:
            raise InvalidInputError("the verifier key is too long")
        name, _, rest = text.partition("+")
        hex_id, sep, encoded = rest.partition("+")
        if not sep or not _HEX8.fullmatch(hex_id):
            raise InvalidInputError(
                "a verifier key has the form <name>+<8 hex digits>+<base64 key>, as "
                "`chatledger keygen` prints it"
            )
        check_key_name(name, "verifier key's name")
        raw = _b64decode(encoded, "verifier key's public key")
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise InvalidInputError(
                "the verifier key is not an Ed25519 key (0x01 followed by 32 bytes)"
            )
        verifier = cls(name, raw[1:])
        if verifier.key_id != bytes.fromhex(hex_id):
            raise InvalidInputError(
                f"the verifier key for {name!r} says key id {hex_id.lower()}, but its name and "
                f"public key give {verifier.key_id.hex()}: the key was altered or mistyped"
            )
        return verifier

    @property
    def verifier_key(self) -> str:
        """The ``<name>+<key id>+<base64 key>`` text to give to anyone who verifies."""
        encoded = base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode("ascii")
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature of ``message``."""
        if len(signature) != 64:
            return False
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Verifier)
            and self.name == other.name
            and self.public_key == other.public_key
        )

    def __hash__(self) -> int:
        return hash((self.name, self.public_key))

    def __repr__(self) -> str:
        return f"Verifier({self.verifier_key!r})"


def _register_key_material(private_key: Ed25519PrivateKey) -> None:
    """Register the key's seed in every form it is written in (base64 and hex, with and
    without the algorithm byte) as secrets, so no error text shows it (chatledger.errors)."""
    seed = private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    for raw in (seed, bytes([ALG_ED25519]) + seed):
        for text in (
            base64.b64encode(raw).decode("ascii"),
            base64.urlsafe_b64encode(raw).decode("ascii"),
            raw.hex(),
            raw.hex().upper(),
        ):
            register_secret(text)
            register_secret(text.rstrip("="))


class Signer:
    """An Ed25519 private key with its note name. Its ``repr`` never shows the key."""

    __slots__ = ("_key", "verifier")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        check_key_name(name)
        if not isinstance(private_key, Ed25519PrivateKey):
            raise InvalidInputError("a note signer needs an Ed25519 private key")
        self._key = private_key
        _register_key_material(private_key)
        public = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.verifier = Verifier(name, public)

    @property
    def name(self) -> str:
        """The key name written in signature lines."""
        return self.verifier.name

    @property
    def key_id(self) -> bytes:
        """The 4-byte key id."""
        return self.verifier.key_id

    @classmethod
    def generate(cls, name: str) -> Signer:
        """A new random key named ``name``."""
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def parse(cls, text: str, *, name: str | None = None) -> Signer:
        """Read a private key: the ``PRIVATE+KEY+...`` line, or PEM PKCS#8 with ``name``."""
        if not isinstance(text, str):
            raise InvalidInputError("a private key must be text")
        stripped = text.strip()
        if stripped.startswith("PRIVATE+KEY+"):
            signer = cls._parse_note_key(stripped)
            if name is not None and name != signer.name:
                raise InvalidInputError(
                    f"the private key is named {signer.name!r}, not {name!r}: a key's name is "
                    "part of its id"
                )
            return signer
        if stripped.startswith("-----BEGIN"):
            if name is None:
                raise InvalidInputError(
                    "a PEM private key carries no name: give the key name (for example the "
                    "log's origin) along with it"
                )
            return cls._parse_pem(stripped, name)
        raise InvalidInputError(
            "the private key is neither a PRIVATE+KEY+<name>+<id>+<key> line nor a PEM "
            "PKCS#8 Ed25519 key"
        )

    @classmethod
    def _parse_note_key(cls, text: str) -> Signer:
        register_secret(text)
        parts = text.split("+")
        # PRIVATE, KEY, name, id, and base64 (which may itself hold '+').
        if len(parts) < 5 or not _HEX8.fullmatch(parts[3]):
            raise InvalidInputError(
                "the private key is not in the PRIVATE+KEY+<name>+<8 hex digits>+<base64> form"
            )
        name, hex_id, encoded = parts[2], parts[3], "+".join(parts[4:])
        register_secret(encoded)
        check_key_name(name, "private key's name")
        try:
            raw = _b64decode(encoded, "private key")
        except InvalidInputError:
            raise InvalidInputError("the private key's key part is not canonical base64") from None
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise InvalidInputError(
                "the private key is not an Ed25519 key (0x01 followed by a 32-byte seed)"
            )
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if signer.key_id != bytes.fromhex(hex_id):
            raise InvalidInputError(
                f"the private key for {name!r} says key id {hex_id.lower()}, but its public "
                "key gives another: the key was altered or mistyped"
            )
        return signer

    @classmethod
    def _parse_pem(cls, text: str, name: str) -> Signer:
        register_secret(text)
        for line in text.splitlines():
            if line and not line.startswith("-----"):
                register_secret(line)
        try:
            key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
        except (ValueError, TypeError, UnicodeEncodeError):
            raise InvalidInputError(
                "the PEM private key could not be read (an encrypted key, a damaged file, or "
                "not PKCS#8): write it unencrypted with `openssl genpkey -algorithm ed25519` "
                "and protect the file instead"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise InvalidInputError(
                f"the PEM private key is a {type(key).__name__}, not an Ed25519 key"
            )
        return cls(name, key)

    def private_key_string(self) -> str:
        """The ``PRIVATE+KEY+<name>+<id>+<base64>`` text of this key. It is the secret."""
        seed = self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        encoded = base64.b64encode(bytes([ALG_ED25519]) + seed).decode("ascii")
        return f"PRIVATE+KEY+{self.name}+{self.key_id.hex()}+{encoded}"

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return self._key.sign(message)

    def __repr__(self) -> str:
        return f"Signer(name={self.name!r}, key_id={self.key_id.hex()!r})"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Signer holds a private key and is not pickled")


def generate_key(name: str) -> tuple[str, str]:
    """A new Ed25519 key: ``(private key text, verifier key text)``. Keep the first secret."""
    signer = Signer.generate(name)
    return signer.private_key_string(), signer.verifier.verifier_key


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: the key name, its 4-byte id and the signature bytes."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        """The signature line, newline included."""
        encoded = base64.b64encode(self.key_id + self.signature).decode("ascii")
        return f"{_SIG_PREFIX}{self.name} {encoded}\n"


@dataclass(frozen=True)
class Note:
    """A note's text (ending in a newline) and its signature lines, not yet verified."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def encode(self) -> str:
        """The signed note as text."""
        return self.text + "\n" + "".join(sig.line() for sig in self.signatures)


@dataclass(frozen=True)
class OpenedNote:
    """A note whose signatures by trusted keys all verified (at least one did)."""

    text: str
    verified: tuple[NoteSignature, ...]
    unverified: tuple[NoteSignature, ...]
    """Signatures by keys the caller does not trust: ignored, as the spec requires."""


def _check_text(text: str) -> None:
    if not text or not text.endswith("\n"):
        raise InvalidInputError("a note's text must be non-empty and end with a newline")
    if _CONTROL.search(text):
        raise InvalidInputError("a note cannot contain control characters other than newline")


def sign_note(text: str, signers: Sequence[Signer], *, keep: Sequence[NoteSignature] = ()) -> str:
    """Sign ``text`` with each signer; ``keep`` are earlier signatures to carry over.

    An earlier signature by the same name and key id as a new one is replaced.
    """
    if not isinstance(text, str):
        raise InvalidInputError("a note's text must be a string")
    _check_text(text)
    if not signers:
        raise InvalidInputError("a note needs at least one signer")
    message = text.encode("utf-8")
    new = [NoteSignature(s.name, s.key_id, s.sign(message)) for s in signers]
    replaced = {(sig.name, sig.key_id) for sig in new}
    kept = [sig for sig in keep if (sig.name, sig.key_id) not in replaced]
    encoded = Note(text, (*kept, *new)).encode()
    if len(encoded.encode("utf-8")) > MAX_NOTE_BYTES:
        raise InvalidInputError(f"the signed note would be larger than {MAX_NOTE_BYTES} bytes")
    return encoded


def parse_note(message: str | bytes) -> Note:
    """Parse a signed note strictly, verifying nothing. Malformed input: InvalidInputError."""
    if isinstance(message, bytes):
        if len(message) > MAX_NOTE_BYTES:
            raise InvalidInputError(f"the note is larger than {MAX_NOTE_BYTES} bytes")
        try:
            message = message.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInputError("the note is not valid UTF-8") from None
    if not isinstance(message, str):
        raise InvalidInputError("a note must be text")
    try:
        size = len(message.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInputError("the note is not valid Unicode text") from None
    if size > MAX_NOTE_BYTES:
        raise InvalidInputError(f"the note is larger than {MAX_NOTE_BYTES} bytes")
    if _CONTROL.search(message):
        raise InvalidInputError("a note cannot contain control characters other than newline")
    split = message.rfind("\n\n")
    if split < 0:
        raise InvalidInputError(
            "the note has no blank line before its signatures: it is not a signed note"
        )
    text, block = message[: split + 1], message[split + 2 :]
    if text == "\n" or not block or not block.endswith("\n"):
        raise InvalidInputError(
            "a signed note is a text, a blank line, then signature lines each ending in a newline"
        )
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise InvalidInputError(f"the note has more than {MAX_SIGNATURES} signatures")
    signatures = []
    for number, line in enumerate(lines, start=1):
        if not line.startswith(_SIG_PREFIX):
            raise InvalidInputError(
                f"signature line {number} does not start with an em dash and a space"
            )
        name, sep, encoded = line[len(_SIG_PREFIX) :].partition(" ")
        if not sep:
            raise InvalidInputError(f"signature line {number} has no signature after the name")
        check_key_name(name, f"key name on signature line {number}")
        raw = _b64decode(encoded, f"signature on line {number}")
        if len(raw) < 5:
            raise InvalidInputError(f"the signature on line {number} is too short")
        signatures.append(NoteSignature(name, raw[:4], raw[4:]))
    return Note(text, tuple(signatures))


def open_note(message: str | bytes, verifiers: Iterable[Verifier]) -> OpenedNote:
    """Parse a signed note and verify it against the trusted ``verifiers``.

    Signatures by unknown keys are ignored. Raises InvalidInputError for a malformed
    note or two different trusted keys with the same name and id, and IntegrityError when
    a trusted key's signature does not verify or no trusted key signed the note.
    """
    note = parse_note(message)
    known: dict[tuple[str, bytes], Verifier] = {}
    for verifier in verifiers:
        if not isinstance(verifier, Verifier):
            raise InvalidInputError("verifiers must be chatledger.proofs.note.Verifier objects")
        slot = (verifier.name, verifier.key_id)
        if slot in known and known[slot] != verifier:
            raise InvalidInputError(
                f"two trusted keys share the name {verifier.name!r} and key id "
                f"{verifier.key_id.hex()}: remove one"
            )
        known[slot] = verifier
    message_bytes = note.text.encode("utf-8")
    verified: list[NoteSignature] = []
    unverified: list[NoteSignature] = []
    seen: set[tuple[str, bytes]] = set()
    for sig in note.signatures:
        slot = (sig.name, sig.key_id)
        trusted = known.get(slot)
        if trusted is None:
            if sig not in unverified:
                unverified.append(sig)
            continue
        if slot in seen:
            continue
        seen.add(slot)
        if not trusted.verify(message_bytes, sig.signature):
            raise IntegrityError(
                f"the signature by {sig.name} (key {sig.key_id.hex()}) does not verify: the "
                "note's text was changed after it was signed, or the signature was forged"
            )
        verified.append(sig)
    if not verified:
        names = ", ".join(sorted({f"{s.name}+{s.key_id.hex()}" for s in note.signatures}))
        trusted_keys = ", ".join(sorted(f"{n}+{i.hex()}" for n, i in known)) or "none"
        raise IntegrityError(
            f"no trusted key signed this note (signed by {names}; trusted: {trusted_keys}): pass "
            "the log's verifier key"
        )
    return OpenedNote(note.text, tuple(verified), tuple(unverified))


# -- keys in files and the environment -------------------------------------------------------


def _read_key_file(path: Path, *, check_permissions: bool) -> str:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise InvalidInputError(f"no key file at {path}") from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read the key file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise InvalidInputError(f"the key file {path} is not a regular file")
    if info.st_size > MAX_KEY_FILE_BYTES:
        raise InvalidInputError(f"the key file {path} is larger than {MAX_KEY_FILE_BYTES} bytes")
    if check_permissions and os.name == "posix" and info.st_mode & 0o077:
        raise InvalidInputError(
            f"the private key file {path} can be read by other users "
            f"(mode {stat.S_IMODE(info.st_mode):o}): run `chmod 600 {path}`"
        )
    try:
        data = path.read_bytes()[:MAX_KEY_FILE_BYTES]
    except OSError as exc:
        raise InvalidInputError(f"cannot read the key file {path}: {exc.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(f"the key file {path} is not UTF-8 text") from None


def load_signer(
    path: str | os.PathLike[str] | None = None,
    *,
    env: str = DEFAULT_KEY_ENV,
    name: str | None = None,
    check_permissions: bool = True,
) -> Signer:
    """The signing key from the file ``path``, else from the environment variable ``env``.

    The file or variable holds a ``PRIVATE+KEY+...`` line or a PEM PKCS#8 Ed25519 key (then
    ``name`` is required). A file must not be readable by group or others (unless
    ``check_permissions=False``).
    """
    if path is not None:
        text = _read_key_file(Path(path), check_permissions=check_permissions)
    else:
        value = os.environ.get(env)
        if not value:
            raise InvalidInputError(
                f"no signing key: set {env} to a PRIVATE+KEY+... key, or pass a key file "
                "(make one with `chatledger keygen NAME`)"
            )
        if len(value) > MAX_KEY_FILE_BYTES:
            raise InvalidInputError(f"{env} is longer than {MAX_KEY_FILE_BYTES} characters")
        text = value
    return Signer.parse(text, name=name)


def load_verifiers(source: str | os.PathLike[str]) -> list[Verifier]:
    """Trusted keys: a verifier key string, or a file of them (one a line, ``#`` comments).

    A signing key given in their place (a ``PRIVATE+KEY+...`` string, or such a line in the
    file) is refused: a verifier never needs it, and it must not travel to one.
    """
    if isinstance(source, str) and source.lstrip().startswith("PRIVATE+KEY"):
        raise InvalidInputError(
            "that is a signing key, not a verifier key: give the <name>+<id>+<key> line "
            "`chatledger keygen` printed (and keep the signing key private)"
        )
    if isinstance(source, str) and "+" in source and not Path(source).exists():
        return [Verifier.parse(source)]
    path = Path(source)
    try:
        if path.stat().st_size > MAX_KEY_FILE_BYTES:
            raise InvalidInputError(
                f"the key file {path} is larger than {MAX_KEY_FILE_BYTES} bytes"
            )
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInputError(
            f"{source} is neither a verifier key (<name>+<id>+<key>) nor a file of them"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read the verifier keys in {path}: {exc}") from None
    verifiers = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("PRIVATE+KEY"):
            raise InvalidInputError(
                f"line {number} of {path} is a private key: give verifiers only the verifier key"
            )
        try:
            verifiers.append(Verifier.parse(line))
        except InvalidInputError as exc:
            raise InvalidInputError(f"line {number} of {path}: {exc.message}") from None
    if not verifiers:
        raise InvalidInputError(f"{path} holds no verifier key")
    return verifiers


def write_private_key(path: str | os.PathLike[str], signer: Signer) -> None:
    """Write ``signer`` as a ``PRIVATE+KEY+...`` line (UTF-8) to a new file readable by
    its owner only.

    Refuses to overwrite an existing file. The key is written to a temporary file of mode
    0600 in the same folder, fsynced, then linked into place, so a failure (a full disk,
    an interrupted run) never leaves a partial key file behind.
    """
    target = Path(path)
    if target.exists() or target.is_symlink():
        raise InvalidInputError(f"{target} already exists: a key file is never overwritten")
    folder = target.parent
    data = (signer.private_key_string() + "\n").encode("utf-8")
    try:
        fd, temporary = tempfile.mkstemp(prefix=".chatledger-key-", dir=folder)
    except OSError as exc:
        raise InvalidInputError(f"cannot create the key file {target}: {exc.strerror}") from None
    try:
        try:
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), 0o600)  # (mkstemp's mode; whatever the umask)
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(temporary, target)  # fails if the target appeared meanwhile
            except FileExistsError:
                raise InvalidInputError(
                    f"{target} already exists: a key file is never overwritten"
                ) from None
            except OSError:  # a file system without hard links
                if target.exists() or target.is_symlink():
                    raise InvalidInputError(
                        f"{target} already exists: a key file is never overwritten"
                    ) from None
                os.rename(temporary, target)
            _fsync_folder(folder)
        except OSError as exc:
            raise InvalidInputError(
                f"cannot write the key file {target}: {exc.strerror}; nothing was written"
            ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _fsync_folder(folder: Path) -> None:
    """Make a new name in ``folder`` durable (where the platform allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
