"""Headless Chromium (Debian's, driven by Playwright) for the browser tests, and a gate that keeps
every request inside the app: a county intranet has no internet, so a page that asks for anything
outside fails its test."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: run `make system-deps` (Debian package chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@dataclass
class Gate:
    """A route handler for ``page.route("**/*", gate)``: requests to ``url`` (and the page's own
    ``blob:`` / ``data:`` resources) go on and are listed in ``inside``; anything else is aborted
    and listed in ``outside``."""

    url: str
    inside: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)

    def __call__(self, route) -> None:
        u = route.request.url
        if u.startswith(self.url + "/") or u.startswith(("blob:", "data:")):
            self.inside.append(u)
            route.continue_()
        else:
            self.outside.append(u)
            route.abort()


@pytest.fixture
def gate():
    return Gate
