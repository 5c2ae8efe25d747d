"""docs/proofs.md's third-party verifier, run against what chatledger makes."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature

from chatledger.proofs.checkpoint import dump_proof, make_checkpoint
from chatledger.proofs.merkle import MemoryTree, consistency_proof, inclusion_proof, root
from chatledger.proofs.note import Signer

DOC = Path(__file__).resolve().parents[2] / "docs" / "proofs.md"


def verifier_namespace() -> dict[str, Any]:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    script = [block for block in blocks if block.startswith("# verify_checkpoint.py")]
    assert len(script) == 1, "docs/proofs.md should hold exactly one verify_checkpoint.py block"
    namespace: dict[str, Any] = {"__name__": "verify_checkpoint"}
    exec(compile(script[0], str(DOC), "exec"), namespace)
    return namespace


def test_the_documented_verifier_accepts_chatledger_proofs_and_refuses_tampering() -> None:
    ns = verifier_namespace()
    signer = Signer.generate("chatledger.example/docs")
    events = [hashlib.sha256(f"event {i}".encode()).digest() for i in range(1_000)]
    tree = MemoryTree.of(events)
    _, old_note = make_checkpoint(MemoryTree.of(events[:377]).head(), signer)
    _, new_note = make_checkpoint(tree.head(), signer)
    vkey = signer.verifier.verifier_key

    origin, size, root_hash = ns["open_checkpoint"](new_note, vkey)
    assert (origin, size, root_hash) == ("chatledger.example/docs", 1_000, tree.root())
    old_origin, old_size, old_root = ns["open_checkpoint"](old_note, vkey)

    for index in (0, 376, 377, 512, 999):
        proof = json.loads(dump_proof(inclusion_proof(tree, index, 1_000), leaf=events[index]))
        path = [base64.b64decode(h) for h in proof["path"]]
        leaf = base64.b64decode(proof["leaf"])
        assert ns["verify_inclusion"](leaf, proof["leaf_index"], size, path, root_hash)
        assert not ns["verify_inclusion"](events[index - 1], index, size, path, root_hash)
        assert not ns["verify_inclusion"](leaf, index, size, path[:-1], root_hash)

    proof = json.loads(dump_proof(consistency_proof(tree, old_size, size)))
    path = [base64.b64decode(h) for h in proof["path"]]
    assert ns["verify_consistency"](old_size, size, old_root, root_hash, path)
    assert ns["verify_consistency"](0, size, hashlib.sha256(b"").digest(), root_hash, [])
    assert ns["verify_consistency"](size, size, root_hash, root_hash, [])
    # A history rewritten before the old checkpoint cannot produce a passing proof.
    forged = MemoryTree.of([*events[:100], hashlib.sha256(b"forged").digest(), *events[101:]])
    forged_path = consistency_proof(forged, old_size, size).path
    assert not ns["verify_consistency"](old_size, size, old_root, forged.root(), list(forged_path))
    assert not ns["verify_consistency"](old_size, size, old_root, root_hash, path[:-1])
    assert not ns["verify_consistency"](size, old_size, root_hash, old_root, path)
    # Every pair of sizes of a small tree agrees with chatledger's own verifier.
    small = MemoryTree.of(events[:40], min_stored_level=1)
    for new in range(41):
        for old in range(new + 1):
            small_path = list(consistency_proof(small, old, new).path)
            assert ns["verify_consistency"](
                old, new, root(small, old), root(small, new), small_path
            )

    with pytest.raises(InvalidSignature):
        ns["open_checkpoint"](new_note.replace("\n1000\n", "\n999\n"), vkey)
    with pytest.raises(ValueError, match="not signed by the trusted key"):
        ns["open_checkpoint"](
            new_note, Signer.generate("chatledger.example/docs").verifier.verifier_key
        )
    assert old_origin == origin
