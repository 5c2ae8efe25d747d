"""Property: any sequence of adds, pops, clears and forks gives the items a plain Python
list would hold, at every version, read back by a fresh reader; and verify passes."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from chatledger.events import MemoryStore
from chatledger.integrations._session_log import SessionLog

ITEM = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant"]), "content": st.text(max_size=8)}
)
OPERATION = st.one_of(
    st.tuples(st.just("add"), st.lists(ITEM, max_size=3)),
    st.tuples(st.just("pop"), st.none()),
    st.tuples(st.just("clear"), st.none()),
    st.tuples(st.just("fork"), st.none()),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(OPERATION, max_size=25))
def test_a_session_folds_to_what_a_list_would_hold(operations: list[tuple[str, Any]]) -> None:
    store = MemoryStore()
    log = SessionLog(store, "s0", integration="test")
    model: list[dict[str, Any]] = []
    states: dict[str, dict[int, list[dict[str, Any]]]] = {"s0": {}}
    forks = 0
    for name, argument in operations:
        if name == "add":
            log.add(argument)
            model.extend(argument)
        elif name == "pop":
            popped = log.pop()
            assert popped == (model.pop() if model else None)
        elif name == "clear":
            log.clear()
            model.clear()
        elif log.version:  # fork, then go on in the fork
            forks += 1
            log.fork(f"s{forks}")
            log = log.sibling(f"s{forks}")
            states[log.session_id] = {}
        assert log.items() == model
        if log.version:
            states[log.session_id][log.version] = list(model)

    for session_id, versions in states.items():
        reader = SessionLog(store, session_id, integration="test")  # a fresh reader
        for version, expected in versions.items():
            assert reader.items_as_of(version) == expected
    assert store.verify().ok
