"""The benchmarks' own loopback Gemini server starts and answers in the dev venv, so
that a refactoring of tests/support cannot silently break `make bench` (figures 8 and 9
once failed with "the loopback Gemini server did not start" for exactly that)."""

from __future__ import annotations

import httpx

from benchmarks.loopback import LoopbackServer


def test_the_benchmark_loopback_server_answers_whole_and_streamed_requests() -> None:
    with LoopbackServer() as server:
        base = f"{server.base_url}/v1beta/models/gemini-2.5-flash"
        whole = httpx.post(f"{base}:generateContent", json={"contents": []}, timeout=30)
        assert whole.status_code == 200
        assert whole.json()["candidates"][0]["content"]["parts"][0]["text"]
        streamed = httpx.post(
            f"{base}:streamGenerateContent?alt=sse", json={"contents": []}, timeout=30
        )
        assert streamed.status_code == 200
        assert streamed.text.count("data: ") >= 2
