"""Checkpoints: format, signatures, proofs as JSON and tlog-proof, a client's trusted head."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatledger.errors import IntegrityError, InvalidInputError
from chatledger.proofs.checkpoint import (
    Checkpoint,
    TrustedHead,
    dump_proof,
    format_tlog_proof,
    iter_notes,
    load_proof,
    make_checkpoint,
    open_checkpoint,
    parse_tlog_proof,
    read_checkpoint_file,
    sign_checkpoint,
    verify_checkpoint_consistency,
    verify_checkpoint_inclusion,
)
from chatledger.proofs.merkle import (
    ConsistencyProof,
    InclusionProof,
    MemoryTree,
    consistency_proof,
    inclusion_proof,
)
from chatledger.proofs.note import Signer, Verifier

from .test_note import SUMDB_NOTE, SUMDB_VKEY

ORIGIN = "chatledger.example/test"
WHEN = dt.datetime(2026, 12, 2, 10, 11, 12, 123456, tzinfo=dt.timezone.utc)


def events(count: int, salt: str = "") -> list[bytes]:
    """Leaf inputs as the store will give them: each event's 32-byte hash."""
    return [hashlib.sha256(f"event {salt}{i}".encode()).digest() for i in range(count)]


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer.generate(ORIGIN)


def test_the_checkpoint_text_is_the_c2sp_format_with_a_time_line(signer: Signer) -> None:
    tree = MemoryTree.of(events(5))
    checkpoint, note = make_checkpoint(tree.head(), signer, time=WHEN)
    root = base64.b64encode(tree.root()).decode()
    assert checkpoint.text() == f"{ORIGIN}\n5\n{root}\ntime 2026-12-02T10:11:12.123456Z\n"
    assert note.startswith(checkpoint.text() + "\n\u2014 " + ORIGIN + " ")
    opened = open_checkpoint(note, [signer.verifier], origin=ORIGIN)
    assert opened.checkpoint == checkpoint
    assert opened.size == 5 and opened.root_hash == tree.root()
    assert Checkpoint.parse_text(checkpoint.text()) == checkpoint


def test_a_real_go_checksum_database_checkpoint_reads() -> None:
    opened = open_checkpoint(SUMDB_NOTE, [Verifier.parse(SUMDB_VKEY)])
    assert opened.checkpoint.origin == "go.sum database tree"
    assert opened.size == 30055305
    assert opened.checkpoint.time is None
    with pytest.raises(IntegrityError, match="not 'chatledger"):
        open_checkpoint(SUMDB_NOTE, [Verifier.parse(SUMDB_VKEY)], origin=ORIGIN)


def test_signing_needs_the_key_named_after_the_origin(signer: Signer) -> None:
    other = Checkpoint("another.example/log", 0, hashlib.sha256(b"").digest(), WHEN)
    with pytest.raises(InvalidInputError, match="named after its origin"):
        sign_checkpoint(other, signer)


def test_a_checkpoint_edited_after_signing_fails(signer: Signer) -> None:
    _, note = make_checkpoint(MemoryTree.of(events(9)).head(), signer, time=WHEN)
    for old, new in [("\n9\n", "\n8\n"), ("time 2026", "time 2025")]:
        with pytest.raises(IntegrityError, match="does not verify"):
            open_checkpoint(note.replace(old, new), [signer.verifier])
    with pytest.raises(IntegrityError, match="no trusted key"):
        open_checkpoint(note, [Signer.generate(ORIGIN).verifier])


@pytest.mark.parametrize(
    "text",
    [
        "o\n5\n",
        "o\n05\nAAAA\n",
        "o\n-5\n" + "A" * 43 + "=\n",
        "o\n99999999999999999999\n" + base64.b64encode(bytes(32)).decode() + "\n",
        "o\n5\n" + base64.b64encode(bytes(31)).decode() + "\n",
        "o\n5\n" + base64.b64encode(bytes(32)).decode()[:-2] + "B=\n",
        "o\n5\n" + base64.b64encode(bytes(32)).decode() + "\n\n",
        "o\n5\n" + base64.b64encode(bytes(32)).decode() + "\ntime yesterday\n",
        "o\n5\n" + base64.b64encode(bytes(32)).decode() + "\ntime 2026-13-02T10:11:12.123456Z\n",
        "o\n5\n"
        + base64.b64encode(bytes(32)).decode()
        + "\ntime 2026-12-02T10:11:12.123456Z\ntime 2026-12-02T10:11:12.123456Z\n",
        "\n5\n" + base64.b64encode(bytes(32)).decode() + "\n",
        "o\n5\n" + base64.b64encode(bytes(32)).decode(),
        "o\n5\n" + base64.b64encode(bytes(32)).decode() + "\n" + "x\n" * 20,
    ],
)
def test_malformed_checkpoints_are_invalid_input(text: str) -> None:
    with pytest.raises(InvalidInputError):
        Checkpoint.parse_text(text)


def test_unknown_extension_lines_are_kept_verbatim() -> None:
    root = base64.b64encode(bytes(32)).decode()
    text = f"o\n5\n{root}\nTimestamp: 1689748607742585419\ntime 2026-12-02T10:11:12.123456Z\n"
    checkpoint = Checkpoint.parse_text(text)
    assert checkpoint.extensions == ("Timestamp: 1689748607742585419",)
    assert checkpoint.time == WHEN


# -- proofs against checkpoints ----------------------------------------------------------------


def test_inclusion_and_consistency_between_signed_checkpoints(signer: Signer) -> None:
    leaves = events(300)
    tree = MemoryTree.of(leaves)
    old_cp, _ = make_checkpoint(MemoryTree.of(leaves[:123]).head(), signer, time=WHEN)
    new_cp, _ = make_checkpoint(tree.head(), signer, time=WHEN)
    proof = consistency_proof(tree, 123, 300)
    verify_checkpoint_consistency(old_cp, new_cp, proof)
    with pytest.raises(IntegrityError, match="sizes 300 and 123"):
        verify_checkpoint_consistency(new_cp, old_cp, proof)
    # A log rewritten before the old checkpoint: the proof the writer can make fails.
    rewritten = MemoryTree.of([*leaves[:50], hashlib.sha256(b"forged").digest(), *leaves[51:]])
    forged_cp, _ = make_checkpoint(rewritten.head(), signer, time=WHEN)
    with pytest.raises(IntegrityError, match="no longer hash to the older root"):
        verify_checkpoint_consistency(old_cp, forged_cp, consistency_proof(rewritten, 123, 300))
    included = inclusion_proof(tree, 200, 300)
    verify_checkpoint_inclusion(new_cp, included, leaves[200])
    with pytest.raises(IntegrityError):
        verify_checkpoint_inclusion(new_cp, included, leaves[201])
    with pytest.raises(IntegrityError, match="tree of 300 leaves, but the checkpoint has 123"):
        verify_checkpoint_inclusion(old_cp, included, leaves[200])


def test_proof_json_round_trips_and_is_compact(signer: Signer) -> None:
    leaves = events(40)
    tree = MemoryTree.of(leaves, min_stored_level=2)
    _, note = make_checkpoint(tree.head(), signer, time=WHEN)
    proof = inclusion_proof(tree, 17, 40)
    text = dump_proof(proof, leaf=leaves[17], event_id="e-17", checkpoint=note)
    assert " " not in dump_proof(proof, leaf=leaves[17])
    assert json.loads(text)["checkpoint"] == note
    loaded = load_proof(text)
    assert loaded.proof == proof
    assert (loaded.leaf, loaded.event_id, loaded.checkpoint) == (leaves[17], "e-17", note)
    signed = open_checkpoint(loaded.checkpoint or "", [signer.verifier])
    assert loaded.leaf is not None
    verify_checkpoint_inclusion(signed.checkpoint, loaded.proof, loaded.leaf)
    consistency = consistency_proof(tree, 13, 40)
    assert load_proof(dump_proof(consistency)).proof == consistency


def test_an_inclusion_proof_at_a_million_leaves_is_under_1_5_kb() -> None:
    # 999,999 in a tree of 1,000,000: the longest path (20 hashes) and the longest numbers.
    path = tuple(hashlib.sha256(bytes([i])).digest() for i in range(20))
    proof = InclusionProof(999_999, 1_000_000, path)
    text = dump_proof(proof, leaf=hashlib.sha256(b"leaf").digest())
    assert len(text.encode()) <= 1_500
    consistency = ConsistencyProof(500_001, 1_000_000, path + path[:19])
    assert len(dump_proof(consistency).encode()) <= 2 * 1_500


@pytest.mark.parametrize(
    "document",
    [
        "[]",
        "not json",
        '{"proof":"inclusion","leaf_index":0,"tree_size":1,"path":[],"proof":"inclusion"}',
        '{"proof":"inclusion","leaf_index":0,"tree_size":1}',
        '{"proof":"inclusion","leaf_index":0,"tree_size":1,"path":[],"extra":1}',
        '{"proof":"inclusion","leaf_index":true,"tree_size":1,"path":[]}',
        '{"proof":"inclusion","leaf_index":0.0,"tree_size":1,"path":[]}',
        '{"proof":"inclusion","leaf_index":1,"tree_size":1,"path":[]}',
        '{"proof":"inclusion","leaf_index":-1,"tree_size":1,"path":[]}',
        '{"proof":"inclusion","leaf_index":0,"tree_size":1,"path":"AAAA"}',
        '{"proof":"inclusion","leaf_index":0,"tree_size":2,"path":["AAAA"]}',
        '{"proof":"inclusion","leaf_index":0,"tree_size":2,"path":[7]}',
        '{"proof":"inclusion","leaf_index":0,"tree_size":1,"path":[],"event_id":""}',
        '{"proof":"inclusion","leaf_index":0,"tree_size":1,"path":[],"leaf":"AA=="}',
        '{"proof":"inclusion","leaf_index":0,"tree_size":1,"path":[],"checkpoint":5}',
        '{"proof":"consistency","old_size":3,"new_size":2,"path":[]}',
        '{"proof":"both","old_size":1,"new_size":2,"path":[]}',
        '{"proof":"inclusion","leaf_index":0,"tree_size":99999999999999999999,"path":[]}',
        '{"proof":"inclusion","leaf_index":0,"tree_size":2,"path":['
        + ",".join(['"' + base64.b64encode(bytes(32)).decode() + '"'] * 65)
        + "]}",
        '{"proof":"inclusion","leaf_index":0,"tree_size":2,"path":["'
        + base64.b64encode(bytes(32)).decode()[:-2]
        + 'B="]}',
        "[" * 100_000,
        '{"proof":"inclusion","event_id":"' + "x" * 100_000 + '"}',
    ],
)
def test_malformed_proofs_are_invalid_input(document: str) -> None:
    with pytest.raises(InvalidInputError):
        load_proof(document)


@settings(max_examples=150, deadline=None)
@given(
    st.recursive(
        st.none() | st.integers() | st.text(max_size=50),
        lambda c: st.lists(c) | st.dictionaries(st.text(max_size=12), c),
        max_leaves=20,
    )
)
def test_random_json_is_never_anything_but_invalid_input_or_a_proof(value: object) -> None:
    try:
        loaded = load_proof(json.dumps(value))
    except InvalidInputError:
        return
    assert isinstance(loaded.proof, (InclusionProof, ConsistencyProof))


def test_tlog_proof_text_round_trips(signer: Signer) -> None:
    leaves = events(70)
    tree = MemoryTree.of(leaves, min_stored_level=3)
    _, note = make_checkpoint(tree.head(), signer, time=WHEN)
    proof = inclusion_proof(tree, 42, 70)
    text = format_tlog_proof(proof, note, extra=b"event 42")
    assert text.startswith("c2sp.org/tlog-proof@v1\nextra ZXZlbnQgNDI=\nindex 42\n")
    parsed, signed, extra = parse_tlog_proof(text, [signer.verifier], origin=ORIGIN)
    assert parsed == proof and extra == b"event 42"
    verify_checkpoint_inclusion(signed.checkpoint, parsed, leaves[42])
    with pytest.raises(InvalidInputError):
        parse_tlog_proof(text.replace("index 42", "index 042"), [signer.verifier])
    with pytest.raises(IntegrityError):
        parse_tlog_proof(text.replace("index 42", "index 70"), [signer.verifier])


# -- files of checkpoints and the trusted head --------------------------------------------------


def test_a_file_of_appended_checkpoints_reads_back_in_order(signer: Signer, tmp_path: Path) -> None:
    leaves = events(30)
    notes = [
        make_checkpoint(MemoryTree.of(leaves[:n]).head(), signer, time=WHEN)[1] for n in (0, 7, 30)
    ]
    path = tmp_path / "checkpoints.log"
    path.write_text("\n".join(notes))
    read = read_checkpoint_file(path, [signer.verifier], origin=ORIGIN)
    assert [c.size for c in read] == [0, 7, 30]
    assert list(iter_notes(path.read_text().splitlines(keepends=True))) == notes
    path.write_text("\n".join(notes)[:-40])
    with pytest.raises(InvalidInputError):
        read_checkpoint_file(path, [signer.verifier])
    path.write_text(notes[0] + notes[1].replace("\n7\n", "\n8\n"))
    with pytest.raises(IntegrityError):
        read_checkpoint_file(path, [signer.verifier])
    with pytest.raises(InvalidInputError, match="no checkpoint file"):
        read_checkpoint_file(tmp_path / "none", [signer.verifier])


def test_the_trusted_head_only_moves_forward_along_the_same_log(
    signer: Signer, tmp_path: Path
) -> None:
    leaves = events(500)
    tree = MemoryTree.of(leaves)
    state = TrustedHead(tmp_path / "trusted.note", [signer.verifier], ORIGIN)
    assert state.current() is None

    def note_at(size: int, source: MemoryTree = tree) -> str:
        from chatledger.proofs.merkle import root

        head = type(source.head())(size, root(source, size))
        return make_checkpoint(head, signer, time=WHEN)[1]

    state.advance(note_at(100))  # trust on first use
    state.advance(note_at(260), consistency_proof(tree, 100, 260))
    current = state.current()
    assert current is not None and current.size == 260
    before = state.path.read_text()

    # Rolled back to an older copy: a smaller tree, whatever proof is offered.
    with pytest.raises(IntegrityError, match="rolled back"):
        state.advance(note_at(200), ConsistencyProof(260, 200, ()))
    with pytest.raises(IntegrityError):
        state.advance(note_at(200), consistency_proof(tree, 200, 260))
    # A rewritten history: a forged event before the trusted size.
    forged = MemoryTree.of([*leaves[:99], hashlib.sha256(b"x").digest(), *leaves[100:]])
    with pytest.raises(IntegrityError):
        state.advance(note_at(400, forged), consistency_proof(forged, 260, 400))
    # A newer checkpoint with no proof.
    with pytest.raises(IntegrityError, match="needs a consistency proof"):
        state.advance(note_at(400))
    assert state.path.read_text() == before
    state.advance(note_at(260))  # the same head again needs no proof
    state.advance(note_at(500), consistency_proof(tree, 260, 500))
    after = state.current()
    assert after is not None and after.size == 500
