"""The PostgreSQL schema: named, ordered migrations, applied once under an advisory lock.

Each migration is SQL with ``{schema}`` (an identifier) and ``{schema_name}`` (a
literal). They are applied in one transaction under a transaction-level advisory lock
(so several processes opening a fresh database at once are safe) and recorded by name
in ``chatledger_migrations``. Why each object is there: see the package docstring and
``docs/stores.md``.
"""

from __future__ import annotations

import re

from psycopg import sql

from ...errors import StoreUnavailableError
from ..store import INLINE_READ_MODELS
from ..views import POSTGRES_VIEWS
from .connection import Connection

__all__ = [
    "LISTENERS_LOCK_CLASS",
    "MIGRATIONS",
    "MIGRATIONS_LOCK_CLASS",
    "POSITIONS_LOCK_CLASS",
    "READ_MODEL_MIGRATIONS",
    "SCHEMA_NAME",
    "check_server",
    "foreign_relations",
    "migrate",
    "pending_migrations",
    "schema_problems",
]

#: What a schema name may be (an identifier that needs no quoting).
SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

#: advisory lock classes ("chlg" and the next values), keyed by hashtext(schema), and
#: for subscribers (held shared while they listen), by hashtext(their channel)
POSITIONS_LOCK_CLASS = 1667787879
MIGRATIONS_LOCK_CLASS = 1667787880
LISTENERS_LOCK_CLASS = 1667787881

# ----------------------------------------------------------------------------- migrations

# Each migration is SQL with {schema} (an identifier) and {schema_name} (a literal).
MIGRATIONS: list[tuple[str, str]] = [
    (
        "001_events",
        """
        CREATE SEQUENCE {schema}.events_position_seq AS bigint CACHE 1;
        CREATE TABLE {schema}.events (
            position bigint PRIMARY KEY,
            conversation_id text COLLATE "C" NOT NULL,
            version bigint NOT NULL,
            event_id text COLLATE "C" NOT NULL,
            type text NOT NULL,
            schema_version integer NOT NULL,
            data text NOT NULL,
            metadata text NOT NULL,
            recorded_at text COLLATE "C" NOT NULL,
            hash text NOT NULL,
            xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
            CONSTRAINT events_stream UNIQUE (conversation_id, version),
            CONSTRAINT events_event_id UNIQUE (event_id)
        );
        ALTER SEQUENCE {schema}.events_position_seq OWNED BY {schema}.events.position;
        """,
    ),
    (
        "002_streams",
        """
        CREATE TABLE {schema}.streams (
            conversation_id text COLLATE "C" PRIMARY KEY,
            version bigint NOT NULL,
            head_hash text NOT NULL,
            created_at text COLLATE "C" NOT NULL,
            updated_at text COLLATE "C" NOT NULL,
            parent_id text COLLATE "C",
            parent_version bigint
        );
        CREATE INDEX streams_updated ON {schema}.streams (updated_at);
        CREATE INDEX streams_parent ON {schema}.streams (parent_id);
        """,
    ),
    (
        "003_events_are_immutable",
        """
        CREATE FUNCTION {schema}.chatledger_refuse_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'chatledger events are immutable' USING ERRCODE = 'integrity_constraint_violation';
        END
        $$;
        CREATE TRIGGER events_no_update_or_delete BEFORE UPDATE OR DELETE ON {schema}.events
            FOR EACH ROW EXECUTE FUNCTION {schema}.chatledger_refuse_change();
        CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON {schema}.events
            FOR EACH STATEMENT EXECUTE FUNCTION {schema}.chatledger_refuse_change();
        """,
    ),
    (
        "004_snapshots",
        """
        CREATE TABLE {schema}.snapshots (
            conversation_id text COLLATE "C" NOT NULL,
            name text COLLATE "C" NOT NULL,
            version bigint NOT NULL,
            state bytea NOT NULL,
            PRIMARY KEY (conversation_id, name)
        );
        """,
    ),
    (
        "005_allocate_positions",
        # See the module docstring: the transaction id and the positions are assigned
        # together under a lock held for microseconds, so their orders agree. The
        # exception block makes sure a cancelled call never keeps the session lock.
        """
        CREATE FUNCTION {schema}.chatledger_allocate_positions(n integer) RETURNS bigint[]
        LANGUAGE plpgsql AS $$
        DECLARE
            positions bigint[];
        BEGIN
            IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
                RAISE EXCEPTION 'chatledger positions must be allocated by the first write of a transaction'
                    USING ERRCODE = 'object_not_in_prerequisite_state';
            END IF;
            BEGIN
                PERFORM pg_advisory_lock(1667787879, hashtext({schema_name}));
                PERFORM pg_current_xact_id();
                SELECT array_agg(allocated.p ORDER BY allocated.p) INTO positions
                FROM (SELECT nextval('{schema}.events_position_seq') AS p
                      FROM generate_series(1, n)) AS allocated;
                PERFORM pg_advisory_unlock(1667787879, hashtext({schema_name}));
            EXCEPTION WHEN OTHERS OR query_canceled THEN
                PERFORM pg_advisory_unlock_all();
                RAISE;
            END;
            RETURN positions;
        END
        $$;
        """,
    ),
    (
        "006_append",
        # One call per append: lock the conversation, check its head, and only then
        # allocate positions and write. See the module docstring.
        """
        CREATE FUNCTION {schema}.chatledger_append(
            p_conversation_id text,
            p_expected_version bigint,
            p_expected_hash text,
            p_events json,
            p_parent_id text,
            p_parent_version bigint,
            OUT positions bigint[],
            OUT version bigint,
            OUT head_hash text
        )
        LANGUAGE plpgsql AS $$
        DECLARE
            n integer := json_array_length(p_events);
            last json := p_events -> (n - 1);
        BEGIN
            -- What the NOTIFY after COMMIT announces ('' for nothing): a session setting.
            PERFORM set_config('chatledger.notify_position', '', false);
            -- Takes no transaction id, so waiting here holds no reader back.
            PERFORM pg_advisory_xact_lock(hashtextextended(p_conversation_id, 0));
            -- A new statement, so a new snapshot: it sees what the lock's last holder wrote.
            SELECT s.version, s.head_hash INTO version, head_hash
            FROM {schema}.streams AS s WHERE s.conversation_id = p_conversation_id;
            IF coalesce(version, 0) <> p_expected_version
                    OR coalesce(head_hash, '') <> coalesce(p_expected_hash, '') THEN
                version := coalesce(version, 0);
                RETURN;  -- positions NULL: the head is not what the caller hashed against
            END IF;
            positions := {schema}.chatledger_allocate_positions(n);
            INSERT INTO {schema}.events (position, conversation_id, version, event_id, type,
                schema_version, data, metadata, recorded_at, hash)
            SELECT positions[e.i], p_conversation_id, p_expected_version + e.i, e.event_id,
                e.type, e.schema_version, e.data, e.metadata, e.recorded_at, e.hash
            FROM ROWS FROM (json_to_recordset(p_events) AS (event_id text, type text,
                schema_version integer, data text, metadata text, recorded_at text, hash text))
                WITH ORDINALITY AS e(event_id, type, schema_version, data, metadata, recorded_at,
                hash, i);
            version := p_expected_version + n;
            head_hash := last ->> 'hash';
            PERFORM set_config('chatledger.notify_position', positions[n]::text, false);
            IF p_expected_version = 0 THEN
                INSERT INTO {schema}.streams (conversation_id, version, head_hash, created_at,
                    updated_at, parent_id, parent_version)
                VALUES (p_conversation_id, version, head_hash, p_events -> 0 ->> 'recorded_at',
                    last ->> 'recorded_at', p_parent_id, p_parent_version);
            ELSE
                UPDATE {schema}.streams AS s SET version = chatledger_append.version,
                    head_hash = chatledger_append.head_hash, updated_at = last ->> 'recorded_at'
                WHERE s.conversation_id = p_conversation_id;
            END IF;
        END
        $$;
        """,
    ),
    (
        "007_no_index_on_updated_at",
        # Every append moves its stream's updated_at: with an index on it, no update of the
        # head could be HOT, so each append also wrote an index entry (and its WAL).
        # Listings order by (updated_at, conversation_id) and sort anyway.
        """
        DROP INDEX IF EXISTS {schema}.streams_updated;
        """,
    ),
    (
        "008_views_for_sql_readers",
        # chat_conversations and chat_messages, for any SQL tool (see views.py and
        # docs/integrations.md): stored queries only, so appends cost nothing more.
        ";\n".join(POSTGRES_VIEWS.values()),
    ),
    (
        "009_merkle_nodes",
        # The Merkle tree's complete subtrees of 256 leaves and more (docs/proofs.md):
        # filled lazily when a checkpoint or a proof is made, never by an append; a cache
        # that verification recomputes from the events.
        """
        CREATE TABLE {schema}.merkle_nodes (
            level smallint NOT NULL,
            idx bigint NOT NULL,
            hash bytea NOT NULL,
            last_position bigint NOT NULL,
            PRIMARY KEY (level, idx)
        );
        """,
    ),
    (
        "010_erasable_content",
        # Each event's content salt beside it (docs/erasure.md); NULL for the events
        # written before, whose hashes cover their data as stored. The trigger function
        # now lets exactly an erasure through: data and content_salt (from a salt to '')
        # change, every other column (the hash first) stays. Appends write the salt.
        # No planner statistics of content: ANALYZE would copy sampled values into
        # pg_statistic, out of erasure's reach (no query filters on these columns).
        """
        ALTER TABLE {schema}.events ADD COLUMN content_salt text;
        ALTER TABLE {schema}.events ALTER COLUMN data SET STATISTICS 0;
        ALTER TABLE {schema}.snapshots ALTER COLUMN state SET STATISTICS 0;
        CREATE OR REPLACE FUNCTION {schema}.chatledger_refuse_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'UPDATE' AND length(OLD.content_salt) = 64
                    AND NEW.content_salt = ''
                    AND (NEW.position, NEW.conversation_id, NEW.version, NEW.event_id,
                         NEW.type, NEW.schema_version, NEW.metadata, NEW.recorded_at,
                         NEW.hash, NEW.xid)
                    IS NOT DISTINCT FROM
                        (OLD.position, OLD.conversation_id, OLD.version, OLD.event_id,
                         OLD.type, OLD.schema_version, OLD.metadata, OLD.recorded_at,
                         OLD.hash, OLD.xid) THEN
                RETURN NEW;
            END IF;
            RAISE EXCEPTION 'chatledger events are immutable' USING ERRCODE = 'integrity_constraint_violation';
        END
        $$;
        CREATE OR REPLACE FUNCTION {schema}.chatledger_append(
            p_conversation_id text,
            p_expected_version bigint,
            p_expected_hash text,
            p_events json,
            p_parent_id text,
            p_parent_version bigint,
            OUT positions bigint[],
            OUT version bigint,
            OUT head_hash text
        )
        LANGUAGE plpgsql AS $$
        DECLARE
            n integer := json_array_length(p_events);
            last json := p_events -> (n - 1);
        BEGIN
            -- What the NOTIFY after COMMIT announces ('' for nothing): a session setting.
            PERFORM set_config('chatledger.notify_position', '', false);
            -- Takes no transaction id, so waiting here holds no reader back.
            PERFORM pg_advisory_xact_lock(hashtextextended(p_conversation_id, 0));
            -- A new statement, so a new snapshot: it sees what the lock's last holder wrote.
            SELECT s.version, s.head_hash INTO version, head_hash
            FROM {schema}.streams AS s WHERE s.conversation_id = p_conversation_id;
            IF coalesce(version, 0) <> p_expected_version
                    OR coalesce(head_hash, '') <> coalesce(p_expected_hash, '') THEN
                version := coalesce(version, 0);
                RETURN;  -- positions NULL: the head is not what the caller hashed against
            END IF;
            positions := {schema}.chatledger_allocate_positions(n);
            INSERT INTO {schema}.events (position, conversation_id, version, event_id, type,
                schema_version, data, metadata, recorded_at, hash, content_salt)
            SELECT positions[e.i], p_conversation_id, p_expected_version + e.i, e.event_id,
                e.type, e.schema_version, e.data, e.metadata, e.recorded_at, e.hash,
                e.content_salt
            FROM ROWS FROM (json_to_recordset(p_events) AS (event_id text, type text,
                schema_version integer, data text, metadata text, recorded_at text, hash text,
                content_salt text))
                WITH ORDINALITY AS e(event_id, type, schema_version, data, metadata, recorded_at,
                hash, content_salt, i);
            version := p_expected_version + n;
            head_hash := last ->> 'hash';
            PERFORM set_config('chatledger.notify_position', positions[n]::text, false);
            IF p_expected_version = 0 THEN
                INSERT INTO {schema}.streams (conversation_id, version, head_hash, created_at,
                    updated_at, parent_id, parent_version)
                VALUES (p_conversation_id, version, head_hash, p_events -> 0 ->> 'recorded_at',
                    last ->> 'recorded_at', p_parent_id, p_parent_version);
            ELSE
                UPDATE {schema}.streams AS s SET version = chatledger_append.version,
                    head_hash = chatledger_append.head_hash, updated_at = last ->> 'recorded_at'
                WHERE s.conversation_id = p_conversation_id;
            END IF;
        END
        $$;
        """,
    ),
    (
        "011_conversation_read_models",
        # The conversation read models of docs/stores.md ("Read models"), as on SQLite:
        # one summary row per conversation (listings, resumes) and one row per turn of
        # its history. chatledger_append_summarised appends (chatledger_append, unchanged)
        # and advances both tables from what the caller computed from the summary's
        # state (the summary's columns as arguments of their own, and the new contents rows
        # as one JSON array, packed columns in base64), in the same transaction, only if the summary is still that state (its
        # version, head hash and md5 of state): else it raises, and the caller folds
        # instead (PostgresStore._append). The migration's transaction then fills the
        # tables from the log (schema.migrate). Summaries' parent index is partial: a
        # head update of a conversation that is no fork writes no entry there. No
        # planner statistics of content (erasure, as in 010).
        """
        CREATE TABLE {schema}.chat_summaries (
            conversation_id text COLLATE "C" PRIMARY KEY,
            model text NOT NULL,
            title text NOT NULL,
            turns bigint NOT NULL,
            version bigint NOT NULL,
            head_hash text NOT NULL,
            created_at text COLLATE "C" NOT NULL,
            updated_at text COLLATE "C" NOT NULL,
            parent_id text COLLATE "C",
            parent_version bigint,
            state text NOT NULL
        );
        CREATE INDEX chat_summaries_updated
            ON {schema}.chat_summaries (updated_at DESC, conversation_id);
        CREATE INDEX chat_summaries_parent ON {schema}.chat_summaries (parent_id)
            WHERE parent_id IS NOT NULL;
        CREATE TABLE {schema}.chat_contents (
            conversation_id text COLLATE "C" NOT NULL,
            span bigint NOT NULL,
            turn bigint NOT NULL,
            version bigint NOT NULL,
            loaded integer NOT NULL,
            flags text NOT NULL,
            contents bytea NOT NULL,
            curated bytea,
            PRIMARY KEY (conversation_id, span)
        );
        ALTER TABLE {schema}.chat_summaries ALTER COLUMN title SET STATISTICS 0;
        ALTER TABLE {schema}.chat_summaries ALTER COLUMN state SET STATISTICS 0;
        ALTER TABLE {schema}.chat_contents ALTER COLUMN contents SET STATISTICS 0;
        ALTER TABLE {schema}.chat_contents ALTER COLUMN curated SET STATISTICS 0;
        CREATE FUNCTION {schema}.chatledger_append_summarised(
            p_conversation_id text,
            p_expected_version bigint,
            p_expected_hash text,
            p_events json,
            p_parent_id text,
            p_parent_version bigint,
            p_state_md5 text,
            p_model text,
            p_title text,
            p_turns bigint,
            p_created_at text,
            p_updated_at text,
            p_state text,
            p_contents json,
            OUT positions bigint[],
            OUT version bigint,
            OUT head_hash text
        )
        LANGUAGE plpgsql AS $$
        DECLARE
            found integer;
        BEGIN
            SELECT a.positions, a.version, a.head_hash INTO positions, version, head_hash
            FROM {schema}.chatledger_append(p_conversation_id, p_expected_version,
                p_expected_hash, p_events, p_parent_id, p_parent_version) AS a;
            IF positions IS NULL THEN
                RETURN;  -- nothing written: the head is not what the caller hashed against
            END IF;
            IF p_expected_version = 0 THEN
                DELETE FROM {schema}.chat_contents AS c
                WHERE c.conversation_id = p_conversation_id;
                INSERT INTO {schema}.chat_summaries AS c (conversation_id, model, title,
                    turns, version, head_hash, created_at, updated_at, parent_id,
                    parent_version, state)
                VALUES (p_conversation_id, p_model, p_title, p_turns, version, head_hash,
                    p_created_at, p_updated_at, p_parent_id, p_parent_version, p_state)
                ON CONFLICT (conversation_id) DO UPDATE SET model = excluded.model,
                    title = excluded.title, turns = excluded.turns, version = excluded.version,
                    head_hash = excluded.head_hash, created_at = excluded.created_at,
                    updated_at = excluded.updated_at, parent_id = excluded.parent_id,
                    parent_version = excluded.parent_version, state = excluded.state;
            ELSE
                -- The row the caller advanced, or none: the title is kept once it has one.
                UPDATE {schema}.chat_summaries AS c SET model = p_model,
                    title = CASE WHEN c.title = '' THEN p_title ELSE c.title END,
                    turns = p_turns, version = chatledger_append_summarised.version,
                    head_hash = chatledger_append_summarised.head_hash,
                    updated_at = p_updated_at, state = p_state
                WHERE c.conversation_id = p_conversation_id
                    AND c.version = p_expected_version AND c.head_hash = p_expected_hash
                    AND md5(c.state) = p_state_md5;
                GET DIAGNOSTICS found = ROW_COUNT;
                IF found <> 1 THEN
                    -- Rolls the append back: the caller folds the log instead.
                    RAISE EXCEPTION 'chatledger read model of % moved from its state at version %',
                        p_conversation_id, p_expected_version
                        USING ERRCODE = 'serialization_failure';
                END IF;
            END IF;
            IF p_contents IS NOT NULL THEN
                INSERT INTO {schema}.chat_contents AS c (conversation_id, span, turn, version,
                    loaded, flags, contents, curated)
                SELECT p_conversation_id, r.span, r.turn, r.version, r.loaded, r.flags,
                    decode(r.contents, 'base64'), decode(r.curated, 'base64')
                FROM json_to_recordset(p_contents) AS r(span bigint, turn bigint,
                    version bigint, loaded integer, flags text, contents text, curated text)
                ON CONFLICT (conversation_id, span) DO UPDATE SET turn = excluded.turn,
                    version = excluded.version, loaded = excluded.loaded,
                    flags = excluded.flags, contents = excluded.contents,
                    curated = excluded.curated;
            END IF;
        END
        $$;
        """,
    ),
]

#: The migrations that create inline read models' tables: the store fills them from the
#: log in the migration's transaction (see chatledger.events.store.InlineReadModel).
READ_MODEL_MIGRATIONS = frozenset({"011_conversation_read_models"})


def check_server(conn: Connection, location: str) -> None:
    """Refuse a server older than PostgreSQL 14 (``xid8`` snapshots) or a database whose
    encoding is not UTF-8."""
    if conn.info.server_version < 140000:
        raise StoreUnavailableError(
            f"PostgreSQL at {location} is version {conn.info.server_version // 10000}; "
            "chatledger needs PostgreSQL 14 or later"
        )
    encoding = conn.execute("SHOW server_encoding").fetchone()
    if encoding is None or str(encoding[0]).upper() not in {"UTF8", "UTF-8"}:
        raise StoreUnavailableError(
            f"the database at {location} uses the {encoding[0] if encoding else '?'} "
            "encoding; chatledger stores text as UTF-8: create the database with "
            "ENCODING 'UTF8'"
        )


def migrate(
    conn: Connection, schema: str, *, location: str = "", create_in_existing: bool = False
) -> None:
    """Apply the migrations ``schema`` lacks (creating it if needed), once.

    A schema that holds another application's tables, views or sequences (not an
    extension's) and no chatledger log is refused, unchanged, unless
    ``create_in_existing``: the log's tables would be added among them."""
    s = sql.Identifier(schema)
    table = sql.SQL("{}.chatledger_migrations").format(s)
    if pending_migrations(conn, schema) == []:
        return
    with conn.transaction():
        # Serialise migrators (two processes opening a fresh database at once).
        conn.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (MIGRATIONS_LOCK_CLASS, schema)
        )
        if not create_in_existing:
            others = foreign_relations(conn, schema)
            if others:
                raise StoreUnavailableError(
                    f"the schema {schema!r} of {location or 'the database'} holds another "
                    f"application's tables ({', '.join(others)}) and no chatledger log; "
                    "nothing was changed. Put the log in a schema of its own (add "
                    "?schema=chatledger to the URL: it is created), or, to add the log's "
                    "tables beside these, open the store with create_in_existing=True (the "
                    "command line's --create-in-existing)"
                )
        if schema != "public":
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(s))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, "
                "applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(table)
        )
        for name in pending_migrations(conn, schema) or []:
            body = dict(MIGRATIONS)[name]
            conn.execute(sql.SQL(body).format(schema=s, schema_name=sql.Literal(schema)))
            if name in READ_MODEL_MIGRATIONS:
                # Existing logs: the read models are filled from the log, in the
                # migration's transaction (the read models' SQL names no schema).
                conn.execute(sql.SQL("SET LOCAL search_path TO {}, public").format(s))
                for read_model in INLINE_READ_MODELS:
                    read_model.rebuild_all(conn)
                conn.execute("SET LOCAL search_path TO DEFAULT")
            conn.execute(sql.SQL("INSERT INTO {} (name) VALUES (%s)").format(table), (name,))


def foreign_relations(conn: Connection, schema: str, limit: int = 3) -> list[str]:
    """Up to ``limit`` tables, views and sequences in ``schema`` that no extension owns,
    when the schema holds no ``chatledger_migrations`` (else none: it is a log).

    One scan of the catalog with the statement's snapshot: a process that waited for the
    migration lock sees what the migrator before it committed (``to_regclass`` may still
    answer from this session's catalog cache)."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') "
        "AND NOT EXISTS (SELECT 1 FROM pg_depend AS d WHERE d.classid = 'pg_class'::regclass "
        "AND d.objid = c.oid AND d.deptype = 'e') "
        "AND NOT EXISTS (SELECT 1 FROM pg_class AS m WHERE m.relnamespace = n.oid "
        "AND m.relname = 'chatledger_migrations') ORDER BY c.relkind, c.relname LIMIT %s",
        (schema, limit),
    ).fetchall()
    return [str(row[0]) for row in rows]


def pending_migrations(conn: Connection, schema: str) -> list[str] | None:
    """Migration names not applied yet, or None when there is no migrations table."""
    exists = conn.execute(
        "SELECT to_regclass(quote_ident(%s) || '.chatledger_migrations')", (schema,)
    ).fetchone()
    if exists is None or exists[0] is None:
        return None
    table = sql.SQL("{}.chatledger_migrations").format(sql.Identifier(schema))
    applied = {row[0] for row in conn.execute(sql.SQL("SELECT name FROM {}").format(table))}
    return [name for name, _ in MIGRATIONS if name not in applied]


# ----------------------------------------------------------------------------- verify

#: The triggers on ``events`` the migrations make: name -> pg_trigger.tgtype (ROW 1,
#: BEFORE 2, DELETE 8, UPDATE 16, TRUNCATE 32), each calling chatledger_refuse_change.
EXPECTED_TRIGGERS = {"events_no_update_or_delete": 1 | 2 | 8 | 16, "events_no_truncate": 2 | 32}
#: The keys the migrations make: (table, constraint) -> pg_get_constraintdef.
EXPECTED_CONSTRAINTS = {
    ("chatledger_migrations", "chatledger_migrations_pkey"): "PRIMARY KEY (name)",
    ("events", "events_event_id"): "UNIQUE (event_id)",
    ("events", "events_pkey"): 'PRIMARY KEY ("position")',
    ("events", "events_stream"): "UNIQUE (conversation_id, version)",
    ("merkle_nodes", "merkle_nodes_pkey"): "PRIMARY KEY (level, idx)",
    ("snapshots", "snapshots_pkey"): "PRIMARY KEY (conversation_id, name)",
    ("streams", "streams_pkey"): "PRIMARY KEY (conversation_id)",
    ("chat_summaries", "chat_summaries_pkey"): "PRIMARY KEY (conversation_id)",
    ("chat_contents", "chat_contents_pkey"): "PRIMARY KEY (conversation_id, span)",
}
_OWN_TABLES = (
    "chatledger_migrations",
    "events",
    "streams",
    "snapshots",
    "merkle_nodes",
    "chat_summaries",
    "chat_contents",
)
#: A function a migration creates (or, later, replaces: the last body is the expected one).
_FUNCTION = re.compile(r"CREATE (?:OR REPLACE )?FUNCTION \S+\.(\w+)\(.*?\$\$(.*?)\$\$", re.S)


def expected_functions(conn: Connection, schema: str) -> dict[str, str]:
    """Each function the migrations make, and its body (``pg_proc.prosrc``) exactly."""
    functions: dict[str, str] = {}
    for _, body in MIGRATIONS:
        text = (
            sql.SQL(body)
            .format(schema=sql.Identifier(schema), schema_name=sql.Literal(schema))
            .as_string(conn)
        )
        functions.update(_FUNCTION.findall(text))
    return functions


def schema_problems(conn: Connection, schema: str) -> list[str]:
    """What ``verify`` finds missing or changed in the schema the migrations made: every
    migration recorded; the triggers that refuse UPDATE, DELETE and TRUNCATE of events,
    present, enabled and calling chatledger's function; no other trigger on the log's
    tables; the functions' bodies as written (``chatledger_append`` checks the head
    before it writes); the primary keys and unique constraints."""
    problems: list[str] = []
    table = sql.SQL("{}.chatledger_migrations").format(sql.Identifier(schema))
    applied = {row[0] for row in conn.execute(sql.SQL("SELECT name FROM {}").format(table))}
    problems.extend(
        f"migration {name} is not recorded in chatledger_migrations (the table was edited)"
        for name, _ in MIGRATIONS
        if name not in applied
    )
    triggers = conn.execute(
        "SELECT c.relname, t.tgname, t.tgtype, t.tgenabled, p.proname, pn.nspname "
        "FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid "
        "JOIN pg_namespace AS n ON n.oid = c.relnamespace "
        "JOIN pg_proc AS p ON p.oid = t.tgfoid JOIN pg_namespace AS pn ON pn.oid = p.pronamespace "
        "WHERE n.nspname = %s AND c.relname = ANY(%s) AND NOT t.tgisinternal",
        (schema, list(_OWN_TABLES)),
    ).fetchall()
    found = {(str(row[0]), str(row[1])): row[2:] for row in triggers}
    for name, tgtype in EXPECTED_TRIGGERS.items():
        trigger = found.pop(("events", name), None)
        if (
            trigger is None
            or trigger[0] != tgtype
            or trigger[2:]
            != (
                "chatledger_refuse_change",
                schema,
            )
        ):
            problems.append(
                f"the trigger {name} on events is missing or changed: events are no longer "
                "protected from being changed or deleted"
            )
        elif trigger[1] not in ("O", "A"):
            problems.append(
                f"the trigger {name} on events is disabled: events are no longer protected "
                "from being changed or deleted"
            )
    problems.extend(
        f"the trigger {name} on {on} is not chatledger's: it may change what the library writes"
        for on, name in sorted(found)
    )
    bodies: dict[str, str] = dict(
        conn.execute(
            "SELECT p.proname, p.prosrc FROM pg_proc AS p "
            "JOIN pg_namespace AS n ON n.oid = p.pronamespace WHERE n.nspname = %s",
            (schema,),
        ).fetchall()
    )
    problems.extend(
        f"the function {name} is missing or changed (appends and the immutability of events "
        "rely on it)"
        for name, body in expected_functions(conn, schema).items()
        if bodies.get(name) != body
    )
    constraints = {
        (str(row[0]), str(row[1])): str(row[2])
        for row in conn.execute(
            "SELECT c.relname, k.conname, pg_get_constraintdef(k.oid) FROM pg_constraint AS k "
            "JOIN pg_class AS c ON c.oid = k.conrelid "
            "JOIN pg_namespace AS n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = ANY(%s)",
            (schema, list(_OWN_TABLES)),
        )
    }
    problems.extend(
        f"the constraint {name} ({definition}) on {on} is missing or changed"
        for (on, name), definition in EXPECTED_CONSTRAINTS.items()
        if constraints.get((on, name)) != definition
    )
    return problems
