"""A real browser for tests that check a page the way a reader sees it.

Debian's Chromium, headless, run once per page: ``render`` returns the DOM after the page's
scripts have run, ``screenshot`` writes a PNG. ``make test`` installs Chromium when it is
missing; a test that finds no Chromium fails rather than passing unseen.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")

# Headless on a closed network: no sandbox (tests may run as root), and none of the
# background connections Chromium would otherwise try at every start.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def _run(url: str, *options: str, timeout_s: float) -> str:
    if not CHROMIUM.exists():
        raise AssertionError(f"{CHROMIUM} is missing: `make {CHROMIUM}` installs it")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        done = subprocess.run(
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *options, url],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    if done.returncode != 0:
        raise AssertionError(f"chromium exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def render(url: str, *, budget_ms: int = 8000, window: tuple[int, int] = (1280, 2000)) -> str:
    """The page's DOM once its scripts have had ``budget_ms`` of virtual time.

    Virtual time stands still while requests are in flight, so the figures a page fetches
    are in the DOM however slow the machine is, and timers run without real waiting.
    """
    return _run(
        url,
        "--dump-dom",
        f"--virtual-time-budget={budget_ms}",
        f"--window-size={window[0]},{window[1]}",
        timeout_s=120,
    )


def screenshot(
    url: str,
    path: Path,
    *,
    budget_ms: int = 8000,
    window: tuple[int, int] = (1280, 2000),
) -> None:
    """Write a PNG of the page as it looks after ``budget_ms`` of virtual time."""
    _run(
        url,
        f"--screenshot={path}",
        f"--virtual-time-budget={budget_ms}",
        f"--window-size={window[0]},{window[1]}",
        timeout_s=120,
    )
    if not path.exists():
        raise AssertionError(f"chromium wrote no screenshot to {path}")


# A small DOM, enough to find elements by id, tag and attribute and read their text.

VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}
    | {"track", "wbr"}
)


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The text a reader sees, with runs of whitespace collapsed."""
        return " ".join(self._text().split())

    def _text(self) -> str:
        return "".join(
            child if isinstance(child, str) else child._text() for child in self.children
        )

    def iter(self) -> Iterator[Element]:
        for child in self.children:
            if isinstance(child, Element):
                yield child
                yield from child.iter()

    def find_all(self, tag: str | None = None, **attrs: str | None) -> list[Element]:
        """Descendants with this tag whose attributes match (``None``: merely present).

        Attribute names use ``_`` for ``-``, and ``class_`` matches one class among several.
        """
        wanted = {name.rstrip("_").replace("_", "-"): value for name, value in attrs.items()}

        def matches(element: Element) -> bool:
            if tag is not None and element.tag != tag:
                return False
            for name, value in wanted.items():
                if name not in element.attrs:
                    return False
                if value is None:
                    continue
                actual = element.attrs[name]
                if name == "class" and value in actual.split():
                    continue
                if actual != value:
                    return False
            return True

        return [element for element in self.iter() if matches(element)]

    def find(self, tag: str | None = None, **attrs: str | None) -> Element:
        found = self.find_all(tag, **attrs)
        if not found:
            raise AssertionError(f"no <{tag or '*'}> with {attrs}")
        return found[0]

    def by_id(self, element_id: str) -> Element:
        return self.find(id=element_id)


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.open: list[Element] = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs})
        self.open[-1].children.append(element)
        if tag not in VOID:
            self.open.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.open[-1].children.append(Element(tag, {name: value or "" for name, value in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.open) - 1, 0, -1):
            if self.open[depth].tag == tag:
                del self.open[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.open[-1].children.append(data)


def parse(html: str) -> Element:
    """The document tree of serialised HTML, such as ``render`` returns."""
    builder = _Builder()
    builder.feed(html)
    builder.close()
    return builder.root
