"""The performance dashboard: one static page that reads the reporting API from the browser.

The page is self-contained (inline CSS and script, nothing fetched from elsewhere), so it
works on a council's closed network and is served by the reporting service itself. Its
Content-Security-Policy allows exactly that script and style, by hash, and requests to this
origin only.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, RedirectResponse

from shared.http_security import page_policy


def add_dashboard(app: FastAPI) -> None:
    """Serve the dashboard at ``/dashboard``, and send visitors of ``/`` there."""
    page = files("services.reporting").joinpath("dashboard.html").read_text(encoding="utf-8")
    headers = {"Cache-Control": "no-cache", "Content-Security-Policy": page_policy(page)}

    @app.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        # Revalidated on each visit, so a browser picks up a new release of the page at once.
        return HTMLResponse(page, headers=headers)

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        # Relative, so it still lands on the dashboard behind a proxy that adds a path prefix.
        return RedirectResponse("dashboard")
