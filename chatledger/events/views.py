"""SQL views that make the log readable from any SQL tool (Datasette, sqlite3, psql...).

Two views, created by a migration of each store (SQLite and PostgreSQL, the same names
and columns), documented in ``docs/integrations.md``:

``chat_conversations``
    One row per conversation: ``conversation_id``, ``kind`` (``chat``, or the framework
    of a session: ``openai-agents``, ``langchain``), ``model`` (the latest one set),
    ``title`` (the first 100 characters of its first message), ``user_messages``, ``total_tokens``,
    ``events``, ``actor`` (who started it), ``created_at``, ``updated_at``, ``parent_id``,
    ``parent_version``.
``chat_messages``
    One row per message-like event, in log order: ``conversation_id``, ``version``,
    ``item_index``, ``position``, ``turn``, ``role``, ``kind`` (``message``, ``history``,
    ``function_call``, ``function_response``, ``error``, ``item``), ``text``, ``model``,
    ``model_version``, ``prompt_tokens``, ``output_tokens``, ``total_tokens``,
    ``finish_reason``, ``latency_ms``, ``current``, ``actor``, ``recorded_at``,
    ``event_type``.

What a view must not do, and these do not: cost anything on appends (a view is only a
stored query: no trigger, no table, no index), or make the file unreadable to an older
chatledger (which never reads views, and finds its own migrations all applied; the SQL
uses only syntax SQLite has parsed since 3.9, so an older SQLite still opens the file).
The views read ``events`` and ``streams`` only; they are for people, and the library never
reads them. A later migration that rebuilds ``events`` or ``streams`` (sqlite-utils'
``transform``) or changes their columns must drop the views first and create them again
(:data:`SQLITE_VIEWS`, :data:`POSTGRES_VIEWS`); changing a view means a new migration
that replaces it, never editing these (a test pins their text).
"""

from __future__ import annotations

import re

__all__ = ["POSTGRES_VIEWS", "SQLITE_VIEWS", "SQLITE_VIEWS_007", "VIEW_COLUMNS"]

#: The columns of each view, in order (the same on SQLite and PostgreSQL).
VIEW_COLUMNS: dict[str, tuple[str, ...]] = {
    "chat_conversations": (
        "conversation_id",
        "kind",
        "model",
        "title",
        "user_messages",
        "total_tokens",
        "events",
        "actor",
        "created_at",
        "updated_at",
        "parent_id",
        "parent_version",
    ),
    "chat_messages": (
        "conversation_id",
        "version",
        "item_index",
        "position",
        "turn",
        "role",
        "kind",
        "text",
        "model",
        "model_version",
        "prompt_tokens",
        "output_tokens",
        "total_tokens",
        "finish_reason",
        "latency_ms",
        "current",
        "actor",
        "recorded_at",
        "event_type",
    ),
}

# The event types a chat_messages row comes from; the ones holding an array give a row
# per element (initial history contents, session items).
_ROW_TYPES = (
    "'conversation_started', 'history_replaced', 'user_message_added', 'model_responded', "
    "'function_called', 'function_responded', 'model_call_failed', 'session_items_added'"
)
_ARRAY_TYPES = "'conversation_started', 'history_replaced', 'session_items_added'"


# ----------------------------------------------------------------------------- SQLite


def _sqlite_text(json: str, path: str) -> str:
    """The text parts at ``path`` of ``json`` joined in order, thoughts left out (as
    google-genai's ``.text``); NULL when there is none."""
    return (
        "(SELECT group_concat(t, '') FROM (SELECT json_extract(p.value, '$.text') AS t "
        f"FROM json_each({json}, '{path}') AS p WHERE json_type(p.value, '$.text') = 'text' "
        "AND NOT coalesce(json_extract(p.value, '$.thought'), 0) ORDER BY p.key))"
    )


def _sqlite_item_text(item: str) -> str:
    """The text of a session item: an openai-agents item (``content`` as text or parts, a
    function call, a call's output) or a LangChain message (``data.content``)."""
    return (
        "coalesce("
        f"CASE json_type({item}, '$.content') WHEN 'text' THEN json_extract({item}, '$.content') "
        f"WHEN 'array' THEN {_sqlite_text(item, '$.content')} END, "
        f"CASE json_type({item}, '$.data.content') WHEN 'text' THEN "
        f"json_extract({item}, '$.data.content') "
        f"WHEN 'array' THEN {_sqlite_text(item, '$.data.content')} END, "
        f"CASE WHEN json_extract({item}, '$.type') = 'function_call' THEN "
        f"json_extract({item}, '$.name') || '(' || coalesce(json_extract({item}, '$.arguments'), "
        "'') || ')' END, "
        f"CASE json_type({item}, '$.output') WHEN 'text' THEN json_extract({item}, '$.output') END)"
    )


def _sqlite_call_model(direction: str) -> str:
    """The model of the model call a user message starts (``next``) or a response or
    failure answers (``previous``)."""
    if direction == "next":
        where = "c.version = e.version + 1 AND c.type = 'model_call_started'"
        order = ""
    else:
        where = "c.version < e.version AND c.type = 'model_call_started'"
        order = " ORDER BY c.version DESC LIMIT 1"
    return (
        "(SELECT json_extract(c.data, '$.model') FROM events AS c "
        f"WHERE c.conversation_id = e.conversation_id AND {where}{order})"
    )


_SQLITE_LATER = "SELECT 1 FROM events AS x WHERE x.conversation_id = e.conversation_id AND x.version > e.version AND "

_SQLITE_MESSAGES = f"""CREATE VIEW chat_messages AS
SELECT
    e.conversation_id AS conversation_id,
    e.version AS version,
    coalesce(a.key, 0) AS item_index,
    e.position AS position,
    json_extract(e.data, '$.turn') AS turn,
    CASE e.type
        WHEN 'user_message_added' THEN json_extract(e.data, '$.content.role')
        WHEN 'function_responded' THEN 'user'
        WHEN 'session_items_added' THEN coalesce(json_extract(a.value, '$.role'), json_extract(a.value, '$.type'))
        WHEN 'conversation_started' THEN json_extract(a.value, '$.role')
        WHEN 'history_replaced' THEN json_extract(a.value, '$.role')
        ELSE 'model' END AS role,
    CASE e.type
        WHEN 'function_called' THEN 'function_call'
        WHEN 'function_responded' THEN 'function_response'
        WHEN 'model_call_failed' THEN 'error'
        WHEN 'session_items_added' THEN 'item'
        WHEN 'conversation_started' THEN 'history'
        WHEN 'history_replaced' THEN 'history'
        ELSE 'message' END AS kind,
    CASE e.type
        WHEN 'user_message_added' THEN {_sqlite_text("e.data", "$.content.parts")}
        WHEN 'model_responded' THEN {_sqlite_text("e.data", "$.response.candidates[0].content.parts")}
        WHEN 'function_called' THEN json_extract(e.data, '$.name') || '(' || coalesce(json_extract(e.data, '$.args'), '{{}}') || ')'
        WHEN 'function_responded' THEN json_extract(e.data, '$.name') || ' → ' || coalesce('error: ' || json_extract(e.data, '$.error'), json_extract(e.data, '$.response'))
        WHEN 'model_call_failed' THEN json_extract(e.data, '$.error.kind') || ': ' || json_extract(e.data, '$.error.message')
        WHEN 'session_items_added' THEN {_sqlite_item_text("a.value")}
        ELSE {_sqlite_text("a.value", "$.parts")} END AS text,
    CASE
        WHEN e.type = 'user_message_added' THEN {_sqlite_call_model("next")}
        WHEN e.type IN ('model_responded', 'model_call_failed') THEN {_sqlite_call_model("previous")}
        WHEN e.type = 'session_items_added' THEN json_extract(a.value, '$.data.response_metadata.model_name')
        END AS model,
    CASE WHEN e.type = 'model_responded' THEN json_extract(e.data, '$.response.modelVersion') END AS model_version,
    CASE e.type
        WHEN 'model_responded' THEN json_extract(e.data, '$.response.usageMetadata.promptTokenCount')
        WHEN 'session_items_added' THEN json_extract(a.value, '$.data.usage_metadata.input_tokens')
        END AS prompt_tokens,
    CASE e.type
        WHEN 'model_responded' THEN json_extract(e.data, '$.response.usageMetadata.candidatesTokenCount')
        WHEN 'session_items_added' THEN json_extract(a.value, '$.data.usage_metadata.output_tokens')
        END AS output_tokens,
    CASE e.type
        WHEN 'model_responded' THEN json_extract(e.data, '$.response.usageMetadata.totalTokenCount')
        WHEN 'session_items_added' THEN json_extract(a.value, '$.data.usage_metadata.total_tokens')
        END AS total_tokens,
    CASE e.type
        WHEN 'model_responded' THEN json_extract(e.data, '$.response.candidates[0].finishReason')
        WHEN 'session_items_added' THEN json_extract(a.value, '$.data.response_metadata.finish_reason')
        END AS finish_reason,
    CASE e.type
        WHEN 'model_responded' THEN json_extract(e.data, '$.latency_ms')
        WHEN 'model_call_failed' THEN json_extract(e.data, '$.latency_ms')
        WHEN 'function_responded' THEN json_extract(e.data, '$.duration_ms')
        END AS latency_ms,
    CASE
        WHEN e.type = 'model_call_failed' THEN 0
        WHEN e.type = 'session_items_added' THEN NOT EXISTS ({_SQLITE_LATER}(x.type = 'session_cleared' OR (x.type = 'session_item_popped' AND json_extract(x.data, '$.item_version') = e.version AND json_extract(x.data, '$.item_index') = a.key AND json_extract(x.data, '$.item_conversation_id') IS NULL)))
        WHEN e.type IN ('conversation_started', 'history_replaced') THEN NOT EXISTS ({_SQLITE_LATER}x.type = 'history_replaced')
        ELSE NOT EXISTS ({_SQLITE_LATER}(x.type = 'history_replaced' OR (x.type IN ('turn_rewound', 'turn_abandoned', 'model_call_failed') AND json_extract(x.data, '$.turn') = json_extract(e.data, '$.turn') AND coalesce(json_extract(x.data, '$.ends_turn'), 1))))
        END AS current,
    json_extract(e.metadata, '$.actor') AS actor,
    e.recorded_at AS recorded_at,
    e.type AS event_type
FROM events AS e
LEFT JOIN json_each(CASE
    WHEN e.type IN ('conversation_started', 'history_replaced') THEN json_extract(e.data, '$.history')
    WHEN e.type = 'session_items_added' THEN json_extract(e.data, '$.items')
    END) AS a
WHERE e.type IN ({_ROW_TYPES})
    AND (a.key IS NOT NULL OR e.type NOT IN ({_ARRAY_TYPES}))"""

_SQLITE_CONVERSATIONS = f"""CREATE VIEW chat_conversations AS
SELECT
    s.conversation_id AS conversation_id,
    coalesce(json_extract(f.metadata, '$.integration'), 'chat') AS kind,
    coalesce(
        (SELECT json_extract(c.data, '$.model') FROM events AS c WHERE c.conversation_id = s.conversation_id AND c.type = 'config_changed' AND json_extract(c.data, '$.model') IS NOT NULL ORDER BY c.version DESC LIMIT 1),
        json_extract(f.data, '$.model')) AS model,
    substr(coalesce(
        {_sqlite_text("json_extract(f.data, '$.history[0]')", "$.parts")},
        (SELECT {_sqlite_text("u.data", "$.content.parts")} FROM events AS u WHERE u.conversation_id = s.conversation_id AND u.type = 'user_message_added' ORDER BY u.version LIMIT 1),
        (SELECT {_sqlite_item_text("json_extract(i.data, '$.items[0]')")} FROM events AS i WHERE i.conversation_id = s.conversation_id AND i.type = 'session_items_added' ORDER BY i.version LIMIT 1)
        ), 1, 100) AS title,
    (SELECT count(*) FROM events AS u WHERE u.conversation_id = s.conversation_id AND u.type = 'user_message_added') AS user_messages,
    (SELECT sum(json_extract(r.data, '$.response.usageMetadata.totalTokenCount')) FROM events AS r WHERE r.conversation_id = s.conversation_id AND r.type = 'model_responded') AS total_tokens,
    s.version AS events,
    json_extract(f.metadata, '$.actor') AS actor,
    s.created_at AS created_at,
    s.updated_at AS updated_at,
    s.parent_id AS parent_id,
    s.parent_version AS parent_version
FROM streams AS s
LEFT JOIN events AS f ON f.conversation_id = s.conversation_id AND f.version = 1"""

#: The views of the SQLite store, by name: the ``CREATE VIEW`` statements of migration
#: ``007_views_for_sql_readers`` (SQLite keeps this text in ``sqlite_master``).
SQLITE_VIEWS_007: dict[str, str] = {
    "chat_conversations": _SQLITE_CONVERSATIONS,
    "chat_messages": _SQLITE_MESSAGES,
}

# An erased event holds a placeholder object where its parts were (docs/erasure.md), and
# json_each over an object gives text values, which json_type(value, '$.text') refuses as
# malformed JSON: from ``008_erasable_content`` on, parts are read only where they are an
# array, and only its object items.
_PARTS = re.compile(
    r"SELECT json_extract\(p\.value, '\$\.text'\) AS t FROM json_each\((.+?), '(\$[^']*)'\) "
    r"AS p WHERE json_type\(p\.value, '\$\.text'\) = 'text' "
    r"AND NOT coalesce\(json_extract\(p\.value, '\$\.thought'\), 0\)"
)
_PART = "CASE p.type WHEN 'object' THEN p.value END"


def _erasure_safe(statement: str) -> str:
    def safe(found: re.Match[str]) -> str:
        json, path = found.group(1), found.group(2)
        return (
            f"SELECT json_extract({_PART}, '$.text') AS t FROM json_each(CASE "
            f"json_type({json}, '{path}') WHEN 'array' THEN {json} END, '{path}') AS p "
            f"WHERE json_type({_PART}, '$.text') = 'text' "
            f"AND NOT coalesce(json_extract({_PART}, '$.thought'), 0)"
        )

    new, count = _PARTS.subn(safe, statement)
    if count != statement.count("FROM json_each("):
        raise AssertionError("a text extraction of the views was not made erasure-safe")
    return new


#: The views as ``008_erasable_content`` makes them again: every text extraction of
#: :data:`SQLITE_VIEWS_007` reads parts only where they are an array.
SQLITE_VIEWS: dict[str, str] = {name: _erasure_safe(sql) for name, sql in SQLITE_VIEWS_007.items()}


# ----------------------------------------------------------------------------- PostgreSQL
# data and metadata are text holding JSON: each row's are read as jsonb once (j.d, j.m).


# The statements go through psycopg's ``sql.SQL(...).format(schema=...)``: a literal brace
# is written twice. ``_lit("a,b")`` is the path literal '{a,b}' as such.


def _lit(path: str) -> str:
    return "'{{" + path + "}}'"


def _pg_path(json: str, path: str) -> str:
    return f"{json} #> {_lit(path)}"


def _pg_text(json: str, path: str) -> str:
    """As :func:`_sqlite_text`; ``path`` is a PostgreSQL path such as ``content,parts``."""
    parts = _pg_path(json, path)
    return (
        "(SELECT string_agg(p.value ->> 'text', '' ORDER BY p.n) FROM jsonb_array_elements("
        f"CASE WHEN jsonb_typeof({parts}) = 'array' THEN {parts} END) WITH ORDINALITY AS p(value, n) "
        "WHERE jsonb_typeof(p.value -> 'text') = 'string' "
        "AND coalesce(p.value -> 'thought', 'false'::jsonb) IN ('false'::jsonb, 'null'::jsonb))"
    )


def _pg_number(json: str, path: str) -> str:
    """The number at ``path`` (NULL when it is not a JSON number)."""
    value = _pg_path(json, path)
    return f"CASE WHEN jsonb_typeof({value}) = 'number' THEN ({json} #>> {_lit(path)})::numeric END"


def _pg_string(json: str, path: str) -> str:
    """The string at ``path`` (NULL when it is not a JSON string)."""
    value = _pg_path(json, path)
    return f"CASE WHEN jsonb_typeof({value}) = 'string' THEN {json} #>> {_lit(path)} END"


def _pg_item_text(item: str) -> str:
    return (
        "coalesce("
        f"CASE jsonb_typeof({item} -> 'content') WHEN 'string' THEN {item} ->> 'content' "
        f"WHEN 'array' THEN {_pg_text(item, 'content')} END, "
        f"CASE jsonb_typeof({_pg_path(item, 'data,content')}) WHEN 'string' THEN "
        f"{item} #>> {_lit('data,content')} "
        f"WHEN 'array' THEN {_pg_text(item, 'data,content')} END, "
        f"CASE WHEN {item} ->> 'type' = 'function_call' THEN "
        f"({item} ->> 'name') || '(' || coalesce({item} ->> 'arguments', '') || ')' END, "
        f"CASE jsonb_typeof({item} -> 'output') WHEN 'string' THEN {item} ->> 'output' END)"
    )


def _pg_call_model(direction: str) -> str:
    if direction == "next":
        where = "c.version = e.version + 1 AND c.type = 'model_call_started'"
        order = ""
    else:
        where = "c.version < e.version AND c.type = 'model_call_started'"
        order = " ORDER BY c.version DESC LIMIT 1"
    return (
        "(SELECT c.data::jsonb ->> 'model' FROM {schema}.events AS c "
        f"WHERE c.conversation_id = e.conversation_id AND {where}{order})"
    )


_PG_LATER = "SELECT 1 FROM {schema}.events AS x WHERE x.conversation_id = e.conversation_id AND x.version > e.version AND "
_PG_TURN = _pg_number("j.d", "turn")

_POSTGRES_MESSAGES = f"""CREATE VIEW {{schema}}.chat_messages AS
SELECT
    e.conversation_id AS conversation_id,
    e.version AS version,
    coalesce(a.n - 1, 0) AS item_index,
    e.position AS position,
    {_PG_TURN} AS turn,
    CASE e.type
        WHEN 'user_message_added' THEN {_pg_string("j.d", "content,role")}
        WHEN 'function_responded' THEN 'user'
        WHEN 'session_items_added' THEN coalesce({_pg_string("a.value", "role")}, {_pg_string("a.value", "type")})
        WHEN 'conversation_started' THEN {_pg_string("a.value", "role")}
        WHEN 'history_replaced' THEN {_pg_string("a.value", "role")}
        ELSE 'model' END AS role,
    CASE e.type
        WHEN 'function_called' THEN 'function_call'
        WHEN 'function_responded' THEN 'function_response'
        WHEN 'model_call_failed' THEN 'error'
        WHEN 'session_items_added' THEN 'item'
        WHEN 'conversation_started' THEN 'history'
        WHEN 'history_replaced' THEN 'history'
        ELSE 'message' END AS kind,
    CASE e.type
        WHEN 'user_message_added' THEN {_pg_text("j.d", "content,parts")}
        WHEN 'model_responded' THEN {_pg_text("j.d", "response,candidates,0,content,parts")}
        WHEN 'function_called' THEN (j.d ->> 'name') || '(' || coalesce(j.d ->> 'args', '{{{{}}}}') || ')'
        WHEN 'function_responded' THEN (j.d ->> 'name') || ' → ' || coalesce('error: ' || (j.d ->> 'error'), j.d ->> 'response')
        WHEN 'model_call_failed' THEN (j.d #>> {_lit("error,kind")}) || ': ' || (j.d #>> {_lit("error,message")})
        WHEN 'session_items_added' THEN {_pg_item_text("a.value")}
        ELSE {_pg_text("a.value", "parts")} END AS text,
    CASE
        WHEN e.type = 'user_message_added' THEN {_pg_call_model("next")}
        WHEN e.type IN ('model_responded', 'model_call_failed') THEN {_pg_call_model("previous")}
        WHEN e.type = 'session_items_added' THEN {_pg_string("a.value", "data,response_metadata,model_name")}
        END AS model,
    CASE WHEN e.type = 'model_responded' THEN {_pg_string("j.d", "response,modelVersion")} END AS model_version,
    CASE e.type
        WHEN 'model_responded' THEN {_pg_number("j.d", "response,usageMetadata,promptTokenCount")}
        WHEN 'session_items_added' THEN {_pg_number("a.value", "data,usage_metadata,input_tokens")}
        END AS prompt_tokens,
    CASE e.type
        WHEN 'model_responded' THEN {_pg_number("j.d", "response,usageMetadata,candidatesTokenCount")}
        WHEN 'session_items_added' THEN {_pg_number("a.value", "data,usage_metadata,output_tokens")}
        END AS output_tokens,
    CASE e.type
        WHEN 'model_responded' THEN {_pg_number("j.d", "response,usageMetadata,totalTokenCount")}
        WHEN 'session_items_added' THEN {_pg_number("a.value", "data,usage_metadata,total_tokens")}
        END AS total_tokens,
    CASE e.type
        WHEN 'model_responded' THEN {_pg_string("j.d", "response,candidates,0,finishReason")}
        WHEN 'session_items_added' THEN {_pg_string("a.value", "data,response_metadata,finish_reason")}
        END AS finish_reason,
    CASE e.type
        WHEN 'model_responded' THEN {_pg_number("j.d", "latency_ms")}
        WHEN 'model_call_failed' THEN {_pg_number("j.d", "latency_ms")}
        WHEN 'function_responded' THEN {_pg_number("j.d", "duration_ms")}
        END AS latency_ms,
    CASE
        WHEN e.type = 'model_call_failed' THEN false
        WHEN e.type = 'session_items_added' THEN NOT EXISTS ({_PG_LATER}(x.type = 'session_cleared' OR (x.type = 'session_item_popped' AND (x.data::jsonb -> 'item_version') = to_jsonb(e.version) AND (x.data::jsonb -> 'item_index') = to_jsonb(a.n - 1) AND x.data::jsonb -> 'item_conversation_id' IS NULL)))
        WHEN e.type IN ('conversation_started', 'history_replaced') THEN NOT EXISTS ({_PG_LATER}x.type = 'history_replaced')
        ELSE NOT EXISTS ({_PG_LATER}(x.type = 'history_replaced' OR (x.type IN ('turn_rewound', 'turn_abandoned', 'model_call_failed') AND (x.data::jsonb -> 'turn') = (j.d -> 'turn') AND coalesce(x.data::jsonb -> 'ends_turn', 'true'::jsonb) = 'true'::jsonb)))
        END AS current,
    {_pg_string("j.m", "actor")} AS actor,
    e.recorded_at AS recorded_at,
    e.type AS event_type
FROM {{schema}}.events AS e
CROSS JOIN LATERAL (SELECT e.data::jsonb AS d, e.metadata::jsonb AS m) AS j
LEFT JOIN LATERAL jsonb_array_elements(CASE
    WHEN e.type IN ('conversation_started', 'history_replaced') AND jsonb_typeof(j.d -> 'history') = 'array' THEN j.d -> 'history'
    WHEN e.type = 'session_items_added' AND jsonb_typeof(j.d -> 'items') = 'array' THEN j.d -> 'items'
    END) WITH ORDINALITY AS a(value, n) ON true
WHERE e.type IN ({_ROW_TYPES})
    AND (a.n IS NOT NULL OR e.type NOT IN ({_ARRAY_TYPES}))"""

_POSTGRES_CONVERSATIONS = f"""CREATE VIEW {{schema}}.chat_conversations AS
SELECT
    s.conversation_id AS conversation_id,
    coalesce({_pg_string("f.m", "integration")}, 'chat') AS kind,
    coalesce(
        (SELECT c.data::jsonb ->> 'model' FROM {{schema}}.events AS c WHERE c.conversation_id = s.conversation_id AND c.type = 'config_changed' AND c.data::jsonb ->> 'model' IS NOT NULL ORDER BY c.version DESC LIMIT 1),
        f.d ->> 'model') AS model,
    substr(coalesce(
        {_pg_text("f.d", "history,0,parts")},
        (SELECT {_pg_text("u.data::jsonb", "content,parts")} FROM {{schema}}.events AS u WHERE u.conversation_id = s.conversation_id AND u.type = 'user_message_added' ORDER BY u.version LIMIT 1),
        (SELECT {_pg_item_text(f"({_pg_path('i.data::jsonb', 'items,0')})")} FROM {{schema}}.events AS i WHERE i.conversation_id = s.conversation_id AND i.type = 'session_items_added' ORDER BY i.version LIMIT 1)
        ), 1, 100) AS title,
    (SELECT count(*) FROM {{schema}}.events AS u WHERE u.conversation_id = s.conversation_id AND u.type = 'user_message_added') AS user_messages,
    (SELECT sum({_pg_number("r.data::jsonb", "response,usageMetadata,totalTokenCount")}) FROM {{schema}}.events AS r WHERE r.conversation_id = s.conversation_id AND r.type = 'model_responded') AS total_tokens,
    s.version AS events,
    {_pg_string("f.m", "actor")} AS actor,
    s.created_at AS created_at,
    s.updated_at AS updated_at,
    s.parent_id AS parent_id,
    s.parent_version AS parent_version
FROM {{schema}}.streams AS s
LEFT JOIN LATERAL (SELECT e.data::jsonb AS d, e.metadata::jsonb AS m FROM {{schema}}.events AS e WHERE e.conversation_id = s.conversation_id AND e.version = 1) AS f ON true"""

#: The views of the PostgreSQL store, by name: ``CREATE VIEW`` statements with a
#: ``{schema}`` placeholder for the store's schema (an identifier), as its migrations take.
POSTGRES_VIEWS: dict[str, str] = {
    "chat_conversations": _POSTGRES_CONVERSATIONS,
    "chat_messages": _POSTGRES_MESSAGES,
}
