"""Signed notes against Go's published notes and keys, strict parsing, key files."""

from __future__ import annotations

import os
import pickle
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from chatledger.errors import IntegrityError, InvalidInputError, redact
from chatledger.proofs.note import (
    MAX_NOTE_BYTES,
    NoteSignature,
    Signer,
    Verifier,
    check_key_name,
    generate_key,
    load_signer,
    load_verifiers,
    open_note,
    parse_note,
    sign_note,
    write_private_key,
)

# golang.org/x/mod/sumdb/note/note_test.go
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgK"
    "vqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGw"
    "nWLox33WWd1RvMc+QQ=\n"
)

# A checkpoint issued by sum.golang.org (retrieved 2024-09-23, as quoted in
# transparency-dev's tests) and the checksum database's key from cmd/go.
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_NOTE = (
    "go.sum database tree\n"
    "30055305\n"
    "mXfgRcJ0bG0j3CPdKwgGWtUzBUbX67saZGRmFuJGGsM=\n"
    "\n"
    "\u2014 sum.golang.org Az3grpgEild5qw7+5dtV13Kf1C2Xurm8q4fhdxvcsDHnqNTaxL2AFjBY+2TyGKevucFc"
    "AAlWFJJYle3EJlDCrQ+y3A8=\n"
)


def test_signing_gives_byte_for_byte_the_note_go_signs() -> None:
    signer = Signer.parse(PETER_SKEY)
    assert signer.name == "PeterNeumann"
    assert signer.key_id.hex() == "c74f20a3"
    assert signer.verifier.verifier_key == PETER_VKEY
    assert signer.private_key_string() == PETER_SKEY
    assert sign_note(TEXT, [signer]) == TEXT + "\n" + PETER_SIG
    # An earlier signature by the same key is replaced, others are kept.
    old = parse_note(TEXT + "\n" + ENOCH_SIG + PETER_SIG).signatures
    assert sign_note(TEXT, [signer], keep=old) == TEXT + "\n" + ENOCH_SIG + PETER_SIG


def test_opening_go_notes() -> None:
    peter, enoch = Verifier.parse(PETER_VKEY), Verifier.parse(ENOCH_VKEY)
    opened = open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [peter])
    assert opened.text == TEXT
    assert [s.name for s in opened.verified] == ["PeterNeumann"]
    assert [s.name for s in opened.unverified] == ["EnochRoot"]
    both = open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [peter, enoch])
    assert [s.name for s in both.verified] == ["PeterNeumann", "EnochRoot"]
    assert both.unverified == ()
    with pytest.raises(IntegrityError, match="no trusted key"):
        open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [])
    # Repeated signatures by one key are verified once.
    assert len(open_note(TEXT + "\n" + PETER_SIG + PETER_SIG, [peter]).verified) == 1


def test_a_real_sum_golang_org_checkpoint_verifies() -> None:
    verifier = Verifier.parse(SUMDB_VKEY)
    opened = open_note(SUMDB_NOTE, [verifier])
    assert opened.text.splitlines() == [
        "go.sum database tree",
        "30055305",
        "mXfgRcJ0bG0j3CPdKwgGWtUzBUbX67saZGRmFuJGGsM=",
    ]
    forged = SUMDB_NOTE.replace("30055305", "30055304")
    with pytest.raises(IntegrityError, match="does not verify"):
        open_note(forged, [verifier])


def test_a_changed_text_or_signature_fails() -> None:
    peter = Verifier.parse(PETER_VKEY)
    bad_sig = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises((IntegrityError, InvalidInputError)):
        open_note(TEXT + "\n" + bad_sig, [peter])
    with pytest.raises(IntegrityError, match="does not verify"):
        open_note(TEXT.replace("answer", "Answer") + "\n" + PETER_SIG, [peter])


def test_malformed_notes_are_invalid_input() -> None:
    peter = Verifier.parse(PETER_VKEY)
    bad_messages = [
        TEXT,
        TEXT + "\n",
        TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + TEXT + "\n" + PETER_SIG,
        TEXT + "\n" + "\u2014 Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgY"
        "N1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=",
        TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        TEXT + "\n" + PETER_SIG * 101,
        TEXT + "\n" + "\u2014 PeterNeumann\n",
        TEXT + "\n" + "\u2014 PeterNeumann AAAA\n",  # shorter than a key id and a byte
        TEXT + "\n" + "\u2014 PeterNeumann x08go/ZJ!!\n",
        TEXT.replace("\n", "\r\n", 1) + "\n" + PETER_SIG,
        "\n\n" + PETER_SIG,
        "x" * (MAX_NOTE_BYTES + 1) + "\n\n" + PETER_SIG,
    ]
    for message in bad_messages:
        with pytest.raises(InvalidInputError):
            open_note(message, [peter])
    with pytest.raises(InvalidInputError, match="UTF-8"):
        parse_note(b"\xff" + (TEXT + "\n" + PETER_SIG).encode())


def test_mangled_keys_are_refused() -> None:
    """As Go's TestNewVerifier/TestNewSigner: every substring and every changed byte fails."""
    for key, parse in ((PETER_VKEY, Verifier.parse), (PETER_SKEY, Signer.parse)):
        raw = key
        for i in range(len(raw)):
            for j in range(i + 1, len(raw) + 1):
                if (i, j) != (0, len(raw)):
                    with pytest.raises(InvalidInputError):
                        parse(raw[i:j])
        for i in range(len(raw)):
            changed = raw[:i] + chr(ord(raw[i]) + 1) + raw[i + 1 :]
            with pytest.raises(InvalidInputError):
                parse(changed)
    with pytest.raises(InvalidInputError):  # wrong length key, with adjusted key hash
        Verifier.parse("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==")
    with pytest.raises(InvalidInputError):  # unknown algorithm, with adjusted key hash
        Verifier.parse("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")


def test_two_different_trusted_keys_with_one_name_and_id_are_refused() -> None:
    peter = Verifier.parse(PETER_VKEY)

    class Impostor(Verifier):
        pass

    other = Verifier.parse(ENOCH_VKEY)
    impostor = Impostor.__new__(Impostor)
    for slot in ("name", "public_key", "key_id", "_key"):
        object.__setattr__(impostor, slot, getattr(other, slot))
    impostor.name, impostor.key_id = peter.name, peter.key_id
    with pytest.raises(InvalidInputError, match="share the name"):
        open_note(TEXT + "\n" + PETER_SIG, [peter, impostor])
    assert open_note(TEXT + "\n" + PETER_SIG, [peter, peter]).verified  # the same key twice


def test_key_names() -> None:
    assert check_key_name("example.com/log") == "example.com/log"
    for bad in ["", "a b", "a+b", "a\u00a0b", "a\u2028b", "a\x00b", "x" * 1025, 5]:
        with pytest.raises(InvalidInputError):
            check_key_name(bad)


def test_generated_keys_round_trip_and_never_show_the_secret() -> None:
    skey, vkey = generate_key("chatledger.example/log")
    signer = Signer.parse(skey)
    verifier = Verifier.parse(vkey)
    assert signer.verifier == verifier
    note = sign_note("hello\n", [signer])
    assert open_note(note, [verifier]).text == "hello\n"
    secret = skey.split("+")[-1]
    assert secret not in repr(signer) and secret not in str(signer)
    assert secret not in redact(f"oops {skey}")  # loading registered it as a secret
    with pytest.raises(TypeError):
        pickle.dumps(signer)
    with pytest.raises(InvalidInputError) as caught:
        Signer.parse(skey[:-2] + "!!")
    assert secret[:10] not in str(caught.value)


@settings(max_examples=40, deadline=None)
@given(
    text=st.text(
        st.characters(blacklist_categories=["Cs", "Cc"]) | st.just("\n"), min_size=1, max_size=200
    ).map(lambda t: t.rstrip("\n") + "\n"),
    count=st.integers(1, 3),
)
def test_sign_then_open_round_trips(text: str, count: int) -> None:
    if text == "\n":
        text = "x\n"
    signers = [Signer.generate(f"k{i}.example") for i in range(count)]
    note = sign_note(text, signers)
    opened = open_note(note, [s.verifier for s in signers])
    assert opened.text == text
    assert len(opened.verified) == count
    with pytest.raises(IntegrityError):
        open_note(note, [Signer.generate("k0.example").verifier])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400) | st.text(max_size=300))
def test_parsing_junk_only_ever_raises_invalid_input(junk: bytes | str) -> None:
    try:
        note = parse_note(junk)
    except InvalidInputError:
        return
    assert all(isinstance(sig, NoteSignature) for sig in note.signatures)


# -- key files and the environment -----------------------------------------------------------


def test_a_key_file_is_written_private_and_never_overwritten(tmp_path: Path) -> None:
    signer = Signer.generate("example.com/log")
    path = tmp_path / "log.key"
    write_private_key(path, signer)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_signer(path).verifier == signer.verifier
    with pytest.raises(InvalidInputError, match="never overwritten"):
        write_private_key(path, Signer.generate("example.com/log"))


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "open.key"
    path.write_text(PETER_SKEY + "\n")
    path.chmod(0o644)
    with pytest.raises(InvalidInputError, match="chmod 600") as caught:
        load_signer(path)
    assert "AYEKFALV" not in str(caught.value)
    assert load_signer(path, check_permissions=False).name == "PeterNeumann"
    path.chmod(0o600)
    assert load_signer(path).key_id.hex() == "c74f20a3"
    with pytest.raises(InvalidInputError, match="no key file"):
        load_signer(tmp_path / "missing.key")
    big = tmp_path / "big.key"
    big.write_bytes(b"x" * 20_000)
    big.chmod(0o600)
    with pytest.raises(InvalidInputError, match="larger"):
        load_signer(big)


def test_a_pem_pkcs8_key_needs_a_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path = tmp_path / "key.pem"
    path.write_text(pem)
    os.chmod(path, 0o600)
    with pytest.raises(InvalidInputError, match="carries no name"):
        load_signer(path)
    signer = load_signer(path, name="example.com/pem")
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert signer.verifier == Verifier("example.com/pem", public)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    ).decode()
    with pytest.raises(InvalidInputError, match="could not be read"):
        Signer.parse(encrypted, name="example.com/pem")
    monkeypatch.setenv("CHATLEDGER_SIGNING_KEY", pem)
    assert load_signer(name="example.com/pem").verifier == signer.verifier


def test_a_key_made_by_openssl_signs_notes(tmp_path: Path) -> None:
    """Interoperability with the usual tool: `openssl genpkey -algorithm ed25519`."""
    path = tmp_path / "openssl.pem"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(path)],
        check=True,
        capture_output=True,
    )
    path.chmod(0o600)
    signer = load_signer(path, name="example.com/openssl")
    public_der = subprocess.run(
        ["openssl", "pkey", "-in", str(path), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    assert signer.verifier.public_key == public_der[-32:]
    assert open_note(sign_note("hello\n", [signer]), [signer.verifier]).text == "hello\n"


def test_the_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHATLEDGER_SIGNING_KEY", raising=False)
    with pytest.raises(InvalidInputError, match="CHATLEDGER_SIGNING_KEY"):
        load_signer()
    monkeypatch.setenv("CHATLEDGER_SIGNING_KEY", PETER_SKEY)
    assert load_signer().name == "PeterNeumann"
    with pytest.raises(InvalidInputError, match="named 'PeterNeumann'"):
        load_signer(name="someone.else")
    monkeypatch.setenv("MY_KEY", "not a key at all")
    with pytest.raises(InvalidInputError, match="neither"):
        load_signer(env="MY_KEY")


def test_verifier_keys_from_a_string_or_a_file(tmp_path: Path) -> None:
    assert load_verifiers(PETER_VKEY) == [Verifier.parse(PETER_VKEY)]
    path = tmp_path / "trusted.keys"
    path.write_text(f"# the log\n{PETER_VKEY}\n\n{ENOCH_VKEY}\n")
    assert [v.name for v in load_verifiers(path)] == ["PeterNeumann", "EnochRoot"]
    path.write_text(PETER_SKEY + "\n")
    with pytest.raises(InvalidInputError, match="private key"):
        load_verifiers(path)
    # The signing key itself, given where a verifier key goes, is refused without its text.
    with pytest.raises(InvalidInputError, match="signing key, not a verifier key") as caught:
        load_verifiers("  " + PETER_SKEY)
    assert PETER_SKEY not in str(caught.value)
    path.write_text("# nothing\n")
    with pytest.raises(InvalidInputError, match="no verifier key"):
        load_verifiers(path)
    with pytest.raises(InvalidInputError, match="neither"):
        load_verifiers(tmp_path / "missing")
