"""Browser sessions: bounded, and a flood of visitors cannot sign anyone out."""

from __future__ import annotations

import time

from chatledger.serve.sessions import Sessions


def test_a_flood_of_visitors_never_evicts_a_signed_in_session() -> None:
    sessions = Sessions(max_sessions=100)
    alice = sessions.sign_in(sessions.new(None), "alice")
    visitors = [sessions.new(None) for _ in range(1000)]
    assert len(sessions) == 101
    assert sessions.get(alice.id) is alice and alice.actor == "alice"
    assert sessions.get(visitors[0].id) is None  # the oldest visitors went first
    assert sessions.get(visitors[-1].id) is visitors[-1]


def test_signing_in_replaces_the_session_and_its_csrf_token() -> None:
    sessions = Sessions()
    visitor = sessions.new(None)
    signed = sessions.sign_in(visitor, "bob")
    assert signed.id != visitor.id and signed.csrf != visitor.csrf
    assert sessions.get(visitor.id) is None
    assert signed.check_csrf(signed.csrf) and not signed.check_csrf(visitor.csrf)
    assert not signed.check_csrf(None) and not signed.check_csrf("é" * 43)
    sessions.drop(signed.id)
    assert sessions.get(signed.id) is None


def test_idle_sessions_are_forgotten() -> None:
    sessions = Sessions(idle_timeout=0.05)
    session = sessions.new("x")
    assert sessions.get(session.id) is session
    time.sleep(0.1)
    assert sessions.get(session.id) is None
    assert sessions.get("") is None and sessions.get("x" * 500) is None
