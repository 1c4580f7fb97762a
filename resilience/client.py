"""Every HTTP call the campaign makes, in one place, so an API change is one edit here."""

from __future__ import annotations

from typing import Any

import httpx


class PlatformClient:
    """The services' HTTP APIs as a partner, a manager and an auditor use them."""

    def __init__(self, ports: dict[str, int], *, timeout_s: float = 10.0) -> None:
        self._ports = ports
        self._http = httpx.AsyncClient(timeout=timeout_s)

    async def close(self) -> None:
        await self._http.aclose()

    def url(self, service: str, path: str) -> str:
        return f"http://127.0.0.1:{self._ports[service]}{path}"

    async def ready(self, service: str) -> bool:
        try:
            return (await self._http.get(self.url(service, "/ready"))).status_code == 200
        except httpx.HTTPError:
            return False

    async def metrics(self, service: str) -> str:
        response = await self._http.get(self.url(service, "/metrics"))
        response.raise_for_status()
        return response.text

    async def submit(self, document: dict[str, Any]) -> httpx.Response:
        return await self._http.post(self.url("referral", "/referrals"), json=document)

    async def set_team_cap(self, team_id: str, cap_per_fte: int) -> None:
        response = await self._http.patch(
            self.url("allocation", f"/teams/{team_id}"), json={"cap_per_fte": cap_per_fte}
        )
        response.raise_for_status()

    async def teams(self) -> list[dict[str, Any]]:
        response = await self._http.get(self.url("allocation", "/teams"))
        response.raise_for_status()
        teams: list[dict[str, Any]] = response.json()
        return teams

    async def open_cases(self, limit: int = 500) -> list[dict[str, Any]]:
        response = await self._http.get(
            self.url("allocation", "/cases"), params={"status": "open", "limit": limit}
        )
        response.raise_for_status()
        cases: list[dict[str, Any]] = response.json()
        return cases

    async def close_case(self, case_id: str, outcome: str) -> int:
        response = await self._http.post(
            self.url("allocation", f"/cases/{case_id}/close"), json={"outcome": outcome}
        )
        return response.status_code

    async def draw_audits(self, month: str) -> None:
        response = await self._http.post(self.url("audit", "/audits/draws"), json={"month": month})
        response.raise_for_status()

    async def assigned_audits(self, month: str) -> list[dict[str, Any]]:
        response = await self._http.get(
            self.url("audit", "/audits"), params={"month": month, "status": "assigned"}
        )
        response.raise_for_status()
        audits: list[dict[str, Any]] = response.json()
        return audits

    async def standards(self) -> list[str]:
        response = await self._http.get(self.url("audit", "/standards"))
        response.raise_for_status()
        return [standard["id"] for standard in response.json()]

    async def complete_audit(self, audit_id: str, auditor_id: str, scores: dict[str, str]) -> int:
        response = await self._http.post(
            self.url("audit", f"/audits/{audit_id}/completion"),
            json={"scores": scores, "learning_points": ["Keep the plan's actions measurable."]},
            headers={"x-auditor-id": auditor_id},
        )
        return response.status_code

    async def monthly_report(self, month: str, district: str | None) -> dict[str, Any]:
        params = {"month": month} | ({"district": district} if district else {})
        response = await self._http.get(self.url("reporting", "/reports/monthly"), params=params)
        response.raise_for_status()
        report: dict[str, Any] = response.json()
        return report
