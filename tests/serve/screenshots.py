"""Screenshots of the main pages for docs/img (``make screenshots``).

    python -m tests.serve.screenshots docs/img

Builds the demo log in a scratch directory, serves it on loopback, and saves one PNG
per page with headless Chromium. tests/serve/test_browser.py runs it too.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.support.expected_conditions import presence_of_element_located
from selenium.webdriver.support.ui import WebDriverWait

import chatledger
from chatledger.client.transports import ScriptedTransport

from .browser import chromium
from .demo import build_demo
from .support import serve_in_thread

PAGES = (
    ("conversations.png", "/", "conversations"),
    ("conversation.png", "/c/{support}?view=full", "history"),
    ("timeline.png", "/c/{support}/events", "timeline"),
    ("branches.png", "/c/{support}/tree", "fork-tree"),
    ("side-by-side.png", "/diff?a={support}&b={fork}", "diff"),
    ("time-travel.png", "/c/{support}?as_of=8", "as-of-notice"),
    ("audit.png", "/c/{support}/audit", "verdict"),
    ("chat.png", "/c/{fork}/chat", "send-form"),
)


def take(out_dir: Path) -> list[Path]:
    """Save the screenshots into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    with tempfile.TemporaryDirectory() as scratch:
        db = str(Path(scratch) / "demo.db")
        demo = build_demo(db)
        client = chatledger.Client(store=db, transport=ScriptedTransport(), actor="alice")
        try:
            with serve_in_thread(client) as served, chromium(1280, 900) as driver:
                for name, path, marker in PAGES:
                    driver.get(served.base_url + path.format(support=demo.support, fork=demo.fork))
                    WebDriverWait(driver, 20).until(presence_of_element_located((By.ID, marker)))
                    height = driver.execute_script("return document.documentElement.scrollHeight")
                    # The whole page (up to 1800 px), at an exact viewport size.
                    driver.execute_cdp_cmd(
                        "Emulation.setDeviceMetricsOverride",
                        {
                            "width": 1280,
                            "height": min(max(600, int(height)), 1800),
                            "deviceScaleFactor": 1,
                            "mobile": False,
                        },
                    )
                    target = out_dir / name
                    driver.save_screenshot(str(target))
                    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
                    saved.append(target)
        finally:
            client.close()
    return saved


if __name__ == "__main__":
    for path in take(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img")):
        print(path)
