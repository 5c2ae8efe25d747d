"""Proofs for auditors: ``keygen``, ``checkpoint``, ``prove``, and what ``verify
--checkpoint`` and ``export --proofs`` share (see docs/proofs.md).

Keys never reach a message: a loaded signing key is registered as a secret (masked in
every error), and only the verifier key is ever printed.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import click
import msgspec

from ..errors import IntegrityError, InvalidInputError, NotFoundError
from ..events import EventStore
from ..proofs.checkpoint import (
    MAX_CHECKPOINT_FILE_BYTES,
    Checkpoint,
    SignedCheckpoint,
    dump_proof,
    iter_notes,
    open_checkpoint,
    verify_checkpoint_consistency,
    verify_checkpoint_inclusion,
)
from ..proofs.merkle import inclusion_proof
from ..proofs.note import (
    DEFAULT_KEY_ENV,
    MAX_NOTE_BYTES,
    Signer,
    Verifier,
    load_signer,
    load_verifiers,
    parse_note,
    write_private_key,
)
from ..proofs.sinks import SinkError, sink_from_spec
from ..proofs.tree import StoreTree, verify_checkpoints
from ._app import settings, shown_location, store_options
from ._ids import resolve_conversation_id
from ._inputs import checked_path
from ._render import CliError, echo

__all__ = [
    "VERIFIER_KEY_ENV",
    "checkpoint",
    "describe_checkpoint",
    "keygen",
    "open_checkpoints",
    "prove",
    "verify_checkpoints",
]

#: The environment variable ``verify --checkpoint`` and ``prove`` read trusted keys from.
VERIFIER_KEY_ENV = "CHATLEDGER_VERIFIER_KEY"


def _verifiers(value: str | None) -> list[Verifier]:
    source = value or os.environ.get(VERIFIER_KEY_ENV)
    if not source:
        raise CliError(
            f"give the log's verifier key with --verifier-key (a <name>+<id>+<key> string or a "
            f"file of them), or set {VERIFIER_KEY_ENV}; `chatledger keygen` printed it"
        )
    return load_verifiers(source)


def _read_notes(path: str, what: str) -> list[str]:
    checked_path(path, what)
    try:
        size = Path(path).stat().st_size
        if size > MAX_CHECKPOINT_FILE_BYTES:
            raise CliError(f"{path} is larger than {MAX_CHECKPOINT_FILE_BYTES} bytes")
        with open(path, encoding="utf-8", newline="") as handle:
            notes = list(iter_notes(handle))
    except FileNotFoundError:
        raise CliError(
            f"no checkpoint file at {path}: give a file `chatledger checkpoint` wrote"
        ) from None
    except UnicodeDecodeError:
        raise CliError(f"{path} is not a checkpoint file (not UTF-8 text)") from None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not notes:
        raise CliError(f"{path} holds no checkpoint")
    return notes


def open_checkpoints(path: str, verifiers: list[Verifier], what: str) -> list[SignedCheckpoint]:
    """Every checkpoint in the file, each signature verified by a trusted key."""
    return [open_checkpoint(note, verifiers) for note in _read_notes(path, what)]


def _latest(path: str, verifiers: list[Verifier] | None, what: str) -> tuple[Checkpoint, str]:
    """The file's last checkpoint and its note; verified when ``verifiers`` are given."""
    note = _read_notes(path, what)[-1]
    if verifiers is not None:
        signed = open_checkpoint(note, verifiers)
        return signed.checkpoint, signed.note
    if len(note.encode("utf-8")) > MAX_NOTE_BYTES:
        raise InvalidInputError(f"the checkpoint in {path} is larger than {MAX_NOTE_BYTES} bytes")
    return Checkpoint.parse_text(parse_note(note).text), note


def describe_checkpoint(checkpoint: Checkpoint) -> str:
    """``of N events by ORIGIN, signed TIME``."""
    when = f", signed {checkpoint.time.isoformat()}" if checkpoint.time is not None else ""
    return f"of {checkpoint.size} events by {checkpoint.origin}{when}"


# --------------------------------------------------------------------------- keygen


@click.command()
@click.argument("name")
@click.option(
    "-o",
    "--output",
    metavar="KEYFILE",
    help="Where to write the signing key (a new file, mode 0600). Default: NAME's last "
    "part, with .key.",
)
def keygen(name: str, output: str | None) -> None:
    """Make an Ed25519 signing key named NAME (the log's origin, e.g. example.com/log).

    Writes the signing key to a new file readable by you only, and prints the verifier
    key to give to auditors. Keep the signing key away from the database's writers.
    """
    signer = Signer.generate(name)
    target = (
        output or (name.rstrip("/").rsplit("/", 1)[-1].replace(":", "_") or "chatledger") + ".key"
    )
    checked_path(target, "--output")
    write_private_key(target, signer)
    click.echo(signer.verifier.verifier_key)
    echo(
        f"Signing key written to {target} (mode 0600; never printed or stored in the log). "
        "Give auditors the verifier key above.",
        err=True,
    )


# --------------------------------------------------------------------------- checkpoint


@click.command()
@click.option(
    "--key",
    "key_file",
    metavar="FILE",
    help=f"The signing key file (default: the {DEFAULT_KEY_ENV} environment variable).",
)
@click.option("--key-name", metavar="NAME", help="The key's name, for a PEM key only.")
@click.option(
    "-o",
    "--output",
    metavar="FILE",
    help="Append the signed checkpoint to this file (kept with every earlier one).",
)
@click.option(
    "--sink",
    "sinks",
    multiple=True,
    metavar="DEST",
    help="Also write it here: -, a file path, https://URL (POSTed) or exec:COMMAND "
    "(on its stdin). May be repeated.",
)
@store_options
def checkpoint(
    key_file: str | None, key_name: str | None, output: str | None, sinks: tuple[str, ...]
) -> None:
    """Sign the log's Merkle tree head (size, root, time) and write it out.

    Writes to standard output unless -o or --sink is given. Keep checkpoints where the
    database's writers cannot change them: `chatledger verify --checkpoint` later proves
    that the log still holds exactly what each one signed.
    """
    if key_file is not None:
        checked_path(key_file, "--key")
    signer = load_signer(key_file, name=key_name)
    destinations = [sink_from_spec(spec) for spec in sinks]
    if output is not None:
        destinations.append(sink_from_spec("file:" + checked_path(output, "--output")))
    if not destinations:
        destinations.append(sink_from_spec("-"))
    client = settings().client(reading=True)
    signed, note = StoreTree(client.store).checkpoint(signer)
    failures = []
    for sink in destinations:
        try:
            sink.write(note)
        except SinkError as exc:
            failures.append(exc.message)
    echo(
        f"Signed a checkpoint of {signed.size} events of {shown_location(client.store.location)} as "
        f"{signed.origin}.",
        err=True,
    )
    if failures:
        raise CliError("; ".join(failures))


# --------------------------------------------------------------------------- prove


@click.command()
@click.argument("event_id", metavar="[ID]", required=False)
@click.option(
    "--checkpoint",
    "checkpoint_file",
    metavar="FILE",
    help="Prove ID is in the tree this checkpoint signed (its last one, for a file of many).",
)
@click.option("--from", "old_file", metavar="OLD", help="Consistency: the older checkpoint.")
@click.option("--to", "new_file", metavar="NEW", help="Consistency: the newer checkpoint.")
@click.option(
    "--verifier-key",
    metavar="KEY",
    help=f"Check the checkpoints' signatures with this key or file of keys (or {VERIFIER_KEY_ENV}).",
)
@store_options
def prove(
    event_id: str | None,
    checkpoint_file: str | None,
    old_file: str | None,
    new_file: str | None,
    verifier_key: str | None,
) -> None:
    """Print proofs as JSON lines, for a third party to check.

    `prove ID --checkpoint FILE`: the inclusion proof of event ID (or of every event of
    conversation ID) in the tree the checkpoint signed. `prove --from OLD --to NEW`: the
    consistency proof that the tree NEW signed extends the tree OLD signed. Each proof is
    checked against its checkpoint before it is printed.
    """
    verifiers = (
        _verifiers(verifier_key) if verifier_key or os.environ.get(VERIFIER_KEY_ENV) else None
    )
    client = settings().client(reading=True)
    tree = StoreTree(client.store)
    if old_file is not None or new_file is not None:
        if event_id is not None or checkpoint_file is not None:
            raise click.UsageError("give either ID --checkpoint FILE, or --from OLD --to NEW")
        if old_file is None or new_file is None:
            raise click.UsageError("a consistency proof needs both --from OLD and --to NEW")
        old, old_note = _latest(old_file, verifiers, "--from")
        new, new_note = _latest(new_file, verifiers, "--to")
        if old.size > new.size:
            raise CliError(
                f"--from signed {old.size} events, more than the {new.size} of --to: give the "
                "older checkpoint to --from"
            )
        consistency = tree.consistency_proof(old.size, new.size)
        try:
            verify_checkpoint_consistency(old, new, consistency)
            for item in (old, new):
                if tree.root(item.size) != item.root_hash:
                    raise IntegrityError(
                        f"the log's first {item.size} events do not hash to that checkpoint's root"
                    )
        except IntegrityError as exc:
            raise CliError(
                f"the log does not prove that {new_file} extends {old_file}: {exc.message}. "
                "Run `chatledger verify --checkpoint` with each"
            ) from None
        click.echo(dump_proof(consistency, checkpoint=new_note, old_checkpoint=old_note))
        return
    if event_id is None or checkpoint_file is None:
        raise click.UsageError("give ID --checkpoint FILE, or --from OLD --to NEW")
    signed, note = _latest(checkpoint_file, verifiers, "--checkpoint")
    ids = _event_ids(client.store, event_id)
    for eid in ids:
        proof, located = tree.inclusion_proof(eid, signed.size)
        try:
            verify_checkpoint_inclusion(signed, proof, located.leaf)
        except IntegrityError as exc:
            raise CliError(
                f"event {eid} does not prove to the checkpoint's root ({exc.message}): the log "
                "no longer holds what the checkpoint signed; run `chatledger verify "
                "--checkpoint`"
            ) from None
        click.echo(dump_proof(proof, leaf=located.leaf, event_id=eid, checkpoint=note))
    if len(ids) > 1:
        echo(
            f"{len(ids)} inclusion proofs, against a checkpoint of {signed.size} events.", err=True
        )


def _event_ids(store: EventStore, value: str) -> list[str]:
    """``value`` as an event id, else every event of the conversation it names."""
    if store._rows_with_event_ids([value]):
        return [value]
    try:
        cid = resolve_conversation_id(store, value)
    except NotFoundError:
        raise NotFoundError(
            f"no event or conversation {value!r} in {shown_location(store.location)}; list conversations "
            "with `chatledger ls` and events with `chatledger log ID`"
        ) from None
    return [event.event_id for event in store.read(cid)]


def with_proofs(
    store: EventStore, lines: Iterable[str], checkpoint_file: str, verifier_key: str | None
) -> Iterator[str]:
    """Export lines, each event with ``"proof"``: its inclusion proof in the tree the
    checkpoint signed (``leaf_index``, ``tree_size``, ``path``), checked before it is
    written. Events after the checkpoint get no proof."""
    verifiers = (
        _verifiers(verifier_key) if verifier_key or os.environ.get(VERIFIER_KEY_ENV) else None
    )
    signed, _ = _latest(checkpoint_file, verifiers, "--checkpoint")
    tree = StoreTree(store)
    tree.update()
    for line in lines:
        event = msgspec.json.decode(line)
        located = tree._locate(event["event_id"])
        if located.leaf_index < signed.size:
            proof = inclusion_proof(tree, located.leaf_index, signed.size)
            try:
                verify_checkpoint_inclusion(signed, proof, located.leaf)
            except IntegrityError as exc:
                raise CliError(
                    f"event {located.event_id} does not prove to the checkpoint's root "
                    f"({exc.message}): the log no longer holds what the checkpoint signed; run "
                    "`chatledger verify --checkpoint`"
                ) from None
            event["proof"] = {
                "leaf_index": proof.leaf_index,
                "tree_size": proof.tree_size,
                "path": [base64.b64encode(value).decode("ascii") for value in proof.path],
            }
        yield msgspec.json.encode(event).decode()
