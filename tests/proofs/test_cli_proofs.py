"""The proof commands on a real SQLite file: keys, checkpoints, proofs and their errors.
Signing keys never appear in output or errors; bad input leaves the log unchanged."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from chatledger.cli import cli
from chatledger.events import SQLiteStore
from chatledger.proofs.checkpoint import load_proof, open_checkpoint, verify_checkpoint_inclusion
from chatledger.proofs.merkle import InclusionProof
from chatledger.proofs.note import Signer, Verifier, write_private_key
from tests.store_contract import message, new_id, started


def run(db: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, ["--db", str(db), *args], env=env, catch_exceptions=False)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "log.db"
    with SQLiteStore(path) as store:
        for _ in range(3):
            cid = new_id()
            store.append(cid, [started(), message(1), message(2)], expected_version=0)
    return path


@pytest.fixture
def signer(tmp_path: Path) -> tuple[Signer, Path]:
    key = Signer.generate("chatledger.test/cli")
    path = tmp_path / "cli.key"
    write_private_key(path, key)
    return key, path


def secret_of(signer: Signer) -> str:
    return signer.private_key_string().split("+", 4)[4]  # (base64 may hold "+")


def test_keygen_writes_a_private_file_and_prints_only_the_verifier_key(
    tmp_path: Path, db: Path
) -> None:
    target = tmp_path / "new.key"
    result = run(db, "keygen", "chatledger.test/new", "-o", str(target))
    assert result.exit_code == 0, result.output
    verifier = Verifier.parse(result.stdout.strip())
    assert verifier.name == "chatledger.test/new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    text = target.read_text().strip()
    assert text.startswith("PRIVATE+KEY+chatledger.test/new+")
    assert text.split("+", 4)[4] not in result.output
    again = run(db, "keygen", "chatledger.test/new", "-o", str(target))
    assert again.exit_code == 1
    assert "never overwritten" in again.output
    assert target.read_text().strip() == text


def test_checkpoint_from_the_environment_to_stdout_opens_with_the_verifier_key(
    db: Path, signer: tuple[Signer, Path]
) -> None:
    key, _ = signer
    env = {"CHATLEDGER_SIGNING_KEY": key.private_key_string()}
    result = run(db, "checkpoint", env=env)
    assert result.exit_code == 0, result.output
    opened = open_checkpoint(result.stdout, [key.verifier])
    assert opened.size == 9 and opened.checkpoint.origin == "chatledger.test/cli"
    assert secret_of(key) not in result.output


def test_a_key_file_others_can_read_is_refused_without_showing_the_key(
    db: Path, signer: tuple[Signer, Path]
) -> None:
    key, path = signer
    os.chmod(path, 0o644)
    result = run(db, "checkpoint", "--key", str(path))
    assert result.exit_code == 1
    assert "Error:" in result.output and secret_of(key) not in result.output
    result = run(db, "checkpoint")
    assert result.exit_code == 1
    assert "chatledger keygen" in result.output


def test_a_failing_sink_is_an_error_and_the_others_still_get_the_checkpoint(
    db: Path, signer: tuple[Signer, Path], tmp_path: Path
) -> None:
    key, path = signer
    out = tmp_path / "heads"
    result = run(db, "checkpoint", "--key", str(path), "-o", str(out), "--sink", "exec:false")
    assert result.exit_code == 1
    assert "Error:" in result.output and secret_of(key) not in result.output
    assert open_checkpoint(out.read_text(), [key.verifier]).size == 9


def test_prove_prints_proofs_that_check_against_the_checkpoint(
    db: Path, signer: tuple[Signer, Path], tmp_path: Path
) -> None:
    key, path = signer
    head = tmp_path / "head"
    assert run(db, "checkpoint", "--key", str(path), "-o", str(head)).exit_code == 0
    with SQLiteStore(db) as store:
        events = store.read_all()
    result = run(db, "prove", events[4].event_id, "--checkpoint", str(head))
    assert result.exit_code == 0, result.output
    loaded = load_proof(result.stdout)
    assert loaded.event_id == events[4].event_id and loaded.leaf is not None
    signed = open_checkpoint(loaded.checkpoint or "", [key.verifier])
    assert isinstance(loaded.proof, InclusionProof)
    verify_checkpoint_inclusion(signed.checkpoint, loaded.proof, bytes.fromhex(events[4].hash))
    whole = run(db, "prove", events[4].conversation_id[:12], "--checkpoint", str(head))
    assert whole.exit_code == 0, whole.output
    lines = [json.loads(line) for line in whole.stdout.splitlines()]
    assert [line["leaf_index"] for line in lines] == [3, 4, 5]


@pytest.mark.parametrize(
    ("args", "message_part"),
    [
        (["prove"], "give ID --checkpoint FILE"),
        (["prove", "--from", "x"], "needs both"),
        (["verify", "some-id", "--checkpoint", "x", "--verifier-key", "a+b+c"], "whole log"),
        (["verify", "--verifier-key", "a+b+c"], "goes with --checkpoint"),
        (["export", "some-id", "--proofs"], "go together"),
    ],
)
def test_usage_errors(db: Path, args: list[str], message_part: str) -> None:
    result = run(db, *args)
    assert result.exit_code == 2
    assert message_part in result.output


def test_errors_name_what_to_do(db: Path, signer: tuple[Signer, Path], tmp_path: Path) -> None:
    key, path = signer
    head = tmp_path / "head"
    assert run(db, "checkpoint", "--key", str(path), "-o", str(head)).exit_code == 0
    result = run(db, "verify", "--checkpoint", str(head))
    assert result.exit_code == 1 and "--verifier-key" in result.output
    given = key.private_key_string()
    result = run(db, "verify", "--checkpoint", str(head), "--verifier-key", given)
    assert result.exit_code == 1 and "not a verifier key" in result.output
    assert secret_of(key) not in result.output
    result = run(
        db,
        "verify",
        "--checkpoint",
        str(tmp_path / "missing"),
        "--verifier-key",
        key.verifier.verifier_key,
    )
    assert result.exit_code == 1 and "no checkpoint file" in result.output
    result = run(db, "prove", "no-such-event", "--checkpoint", str(head))
    assert result.exit_code == 1 and "no event or conversation" in result.output
    # A checkpoint of a larger log than this one: this log was rolled back (or is another).
    other = tmp_path / "other.db"
    with SQLiteStore(other) as store:
        cid = new_id()
        store.append(cid, [started(), message(1)], expected_version=0)
        first = store.read(cid)[0].event_id
    result = run(other, "prove", first, "--checkpoint", str(head))
    assert result.exit_code == 1 and "fewer than the 9" in result.output


def test_an_export_with_proofs_imports_and_a_changed_proof_fails_the_example(
    db: Path, signer: tuple[Signer, Path], tmp_path: Path
) -> None:
    key, path = signer
    head = tmp_path / "head"
    assert run(db, "checkpoint", "--key", str(path), "-o", str(head)).exit_code == 0
    with SQLiteStore(db) as store:
        cid = store.read_all()[0].conversation_id
        store.append(cid, [message(3)], expected_version=3)  # after the checkpoint
    export = tmp_path / "export.jsonl"
    result = run(db, "export", cid, "--proofs", "--checkpoint", str(head), "-o", str(export))
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    assert [("proof" in line) for line in lines] == [True, True, True, False]
    example = Path(__file__).resolve().parents[2] / "examples" / "verify_export.py"
    vkey = key.verifier.verifier_key

    def check(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(example), str(export), *extra],
            capture_output=True,
            text=True,
            check=False,
        )

    # v4 came after the checkpoint: nothing in the file proves that, so it is a problem
    strict = check("--checkpoint", str(head), "--verifier-key", vkey)
    assert strict.returncode == 1, strict.stdout + strict.stderr
    assert f"{cid} v4: not proven by the checkpoint: export again" in strict.stdout
    assert "3 proven in the checkpoint of 9 events, 1 problems" in strict.stdout
    done = check("--checkpoint", str(head), "--verifier-key", vkey, "--accept-unproven")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING 1 events are NOT proven by the checkpoint" in done.stdout
    assert (
        "3 proven in the checkpoint of 9 events, 1 after it NOT proven "
        "(accepted by --accept-unproven), 0 problems"
    ) in done.stdout
    assert check("--accept-unproven").returncode == 2  # the flag needs a checkpoint
    other = Signer.generate("chatledger.test/cli").verifier.verifier_key
    refused = check("--checkpoint", str(head), "--verifier-key", other)
    assert refused.returncode == 1 and "PROBLEM the checkpoint" in refused.stdout
    lines[1]["proof"]["leaf_index"] += 1
    export.write_text("".join(json.dumps(line) + "\n" for line in lines))
    failed = check("--checkpoint", str(head), "--verifier-key", vkey)
    assert failed.returncode == 1
    assert f"{cid} v2: not in the log the checkpoint signed" in failed.stdout
    assert check().returncode == 0  # the chains alone still verify: only the proof changed

    imported = run(tmp_path / "copy.db", "import", str(export))
    assert imported.exit_code == 0, imported.output
    with SQLiteStore(tmp_path / "copy.db") as copy:
        # (the import closes the turn the export left open with one more event)
        assert [e.event_id for e in copy.read(cid)][:4] == [line["event_id"] for line in lines]


def test_an_export_whose_proofs_were_stripped_after_a_change_is_refused(
    db: Path, signer: tuple[Signer, Path], tmp_path: Path
) -> None:
    """Regression: a changed event with its proof (and every later one's) dropped and its
    chain recomputed used to pass as "after the checkpoint"."""
    key, path = signer
    head = tmp_path / "head"
    assert run(db, "checkpoint", "--key", str(path), "-o", str(head)).exit_code == 0
    with SQLiteStore(db) as store:
        cid = store.read_all()[0].conversation_id
    export = tmp_path / "export.jsonl"
    result = run(db, "export", cid, "--proofs", "--checkpoint", str(head), "-o", str(export))
    assert result.exit_code == 0, result.output
    honest = [json.loads(line) for line in export.read_text().splitlines()]
    assert all("proof" in line for line in honest)
    example = Path(__file__).resolve().parents[2] / "examples" / "verify_export.py"
    spec = importlib.util.spec_from_file_location("verify_export", example)
    assert spec is not None and spec.loader is not None
    verifier = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(verifier)

    def check(lines: list[dict[str, object]], *extra: str) -> subprocess.CompletedProcess[str]:
        export.write_text("".join(json.dumps(line) + "\n" for line in lines))
        vkey = key.verifier.verifier_key
        return subprocess.run(
            [
                sys.executable,
                str(example),
                str(export),
                "--checkpoint",
                str(head),
                "--verifier-key",
                vkey,
                *extra,
            ],
            capture_output=True,
            text=True,
            check=False,
        )

    forged = json.loads(json.dumps(honest))
    prev = ""
    for line in forged:
        if line["version"] == 2:
            line["data"]["content"]["parts"] = [{"text": "I consent to everything"}]
        if line["version"] >= 2:
            del line["proof"]
            line["hash"] = verifier.event_hash(line, prev)
        prev = line["hash"]
    refused = check(forged)
    assert refused.returncode == 1, refused.stdout
    for version in (2, 3):
        assert f"{cid} v{version}: not proven by the checkpoint" in refused.stdout
    assert "1 proven in the checkpoint of 9 events, 2 problems" in refused.stdout
    # accepted only when asked, and then said plainly
    accepted = check(forged, "--accept-unproven")
    assert accepted.returncode == 0, accepted.stdout
    assert "WARNING 2 events are NOT proven by the checkpoint" in accepted.stdout
    # an event without a proof before a proven one cannot be after the checkpoint
    gap = json.loads(json.dumps(honest))
    del gap[1]["proof"]
    middle = check(gap, "--accept-unproven")
    assert middle.returncode == 1, middle.stdout
    assert f"{cid} v2: has no proof, but a later event" in middle.stdout
    # a malformed proof is a problem, not a crash
    broken = json.loads(json.dumps(honest))
    broken[1]["proof"]["leaf_index"] = "0"
    broken[2]["proof"]["path"] = ["not base64!"]
    bad = check(broken)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"{cid} v2: not in the log the checkpoint signed" in bad.stdout
    assert f"{cid} v3: not in the log the checkpoint signed" in bad.stdout
    assert check(honest).returncode == 0


def test_a_sink_command_never_sees_the_signing_key_and_its_errors_are_masked(
    db: Path, signer: tuple[Signer, Path], tmp_path: Path
) -> None:
    """Regression: exec: sinks ran with CHATLEDGER_SIGNING_KEY (and API keys) in their
    environment, and a failing one's error output could show key material."""
    key, _ = signer
    seen = tmp_path / "env.txt"
    secret = key.private_key_string()
    env = {
        "CHATLEDGER_SIGNING_KEY": secret,
        "GEMINI_API_KEY": "gemini-key-not-for-sinks",
        "SINK_SETTING": "kept",
    }
    command = f"exec:sh -c 'env > {seen}; echo \"$CHATLEDGER_SIGNING_KEY\" >&2; exit 3'"
    result = run(db, "checkpoint", "--sink", command, env=env)
    assert result.exit_code == 1
    assert "exited with status 3" in result.output
    environment = seen.read_text()
    assert "SINK_SETTING=kept" in environment  # the command still gets its own settings
    assert "CHATLEDGER_SIGNING_KEY" not in environment
    assert "GEMINI_API_KEY" not in environment
    assert secret_of(key) not in environment
    # a command that got key material some other way: every form of it is masked
    seed = base64.b64decode(secret_of(key))
    forms = [seed.hex(), seed[1:].hex(), base64.b64encode(seed[1:]).decode()]
    leak = "exec:sh -c 'echo " + " ".join(f"x{form}x" for form in forms) + " >&2; exit 4'"
    leaked = run(db, "checkpoint", "--sink", leak, env=env)
    assert leaked.exit_code == 1
    assert "exited with status 4" in leaked.output
    assert leaked.output.count("x***x") == len(forms), leaked.output
    for form in forms:
        assert form not in leaked.output


def test_keygen_writes_a_utf8_name_and_never_leaves_a_partial_key_file(
    tmp_path: Path, db: Path, signer: tuple[Signer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a non-ASCII name crashed keygen with a traceback after creating an empty
    key file, so a retry failed with "already exists"."""
    target = tmp_path / "keys" / "utf8.key"
    target.parent.mkdir()
    result = run(db, "keygen", "é.example/log", "-o", str(target))
    assert result.exit_code == 0, result.output
    assert Verifier.parse(result.stdout.strip()).name == "é.example/log"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_bytes().startswith("PRIVATE+KEY+é.example/log+".encode())
    assert sorted(p.name for p in target.parent.iterdir()) == ["utf8.key"]  # no temp file
    # the key signs: checkpoint with it, and the signature opens with the printed key
    head = tmp_path / "head"
    signed = run(db, "checkpoint", "--key", str(target), "-o", str(head))
    assert signed.exit_code == 0, signed.output
    verifier = Verifier.parse(result.stdout.strip())
    assert open_checkpoint(head.read_text(encoding="utf-8"), [verifier]).size == 9

    for name in ("a b", "a+b", "", "bad\x01name"):
        refused = run(db, "keygen", name, "-o", str(tmp_path / "bad.key"))
        assert refused.exit_code != 0
        assert "Error" in refused.output and "Traceback" not in refused.output
        assert not (tmp_path / "bad.key").exists()

    # a failure while writing (a full disk) leaves nothing behind, and a retry works
    failing = tmp_path / "keys" / "full.key"

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", full_disk)
        failed = run(db, "keygen", "é.example/log", "-o", str(failing))
    assert failed.exit_code == 1
    assert "cannot write the key file" in failed.output and "No space left" in failed.output
    assert sorted(p.name for p in target.parent.iterdir()) == ["utf8.key"]
    retried = run(db, "keygen", "é.example/log", "-o", str(failing))
    assert retried.exit_code == 0, retried.output
    assert failing.read_text(encoding="utf-8").startswith("PRIVATE+KEY+é.example/log+")
