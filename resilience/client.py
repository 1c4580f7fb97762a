"""Every HTTP call the campaign makes, in one place, so an API change is one edit here."""

from __future__ import annotations

from typing import Any

import httpx

from services.referral.domain import ROUTE_CATALOGUE
from shared.auth import Role, mint_token


class PlatformClient:
    """The services' HTTP APIs as a partner, a manager and an auditor use them.

    Staff calls carry a token signed with the run's secret (an administrator's, or the
    auditor's own for a completion); a partner's submission carries that partner's key,
    issued over the admin API on first use.
    """

    def __init__(self, ports: dict[str, int], secret: str, *, timeout_s: float = 10.0) -> None:
        self._ports = ports
        self._secret = secret.encode()
        self._partner_keys: dict[str, str] = {}
        self._http = httpx.AsyncClient(
            timeout=timeout_s, headers=self._bearer(Role.ADMINISTRATOR, "campaign-admin")
        )

    def _bearer(self, role: Role, sub: str) -> dict[str, str]:
        token = mint_token(self._secret, sub=sub, role=role, districts=["*"])
        return {"authorization": f"Bearer {token}"}

    async def _partner_key(self, partner_id: str) -> dict[str, str]:
        if partner_id not in self._partner_keys:
            response = await self._http.post(
                self.url("referral", "/partner-keys"),
                json={
                    "partner_id": partner_id,
                    "routes": sorted(route.id for route in ROUTE_CATALOGUE),
                },
            )
            response.raise_for_status()
            self._partner_keys[partner_id] = response.json()["key"]
        return {"x-partner-key": self._partner_keys[partner_id]}

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
        headers = await self._partner_key(str(document.get("partner_id", "unknown-partner")))
        return await self._http.post(
            self.url("referral", "/referrals"), json=document, headers=headers
        )

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
            self.url("allocation", "/cases"),
            params={"status": "open", "limit": limit},
            headers=self._bearer(Role.TEAM_MANAGER, "campaign-manager"),
        )
        response.raise_for_status()
        cases: list[dict[str, Any]] = response.json()
        return cases

    async def close_case(self, case_id: str, outcome: str) -> int:
        response = await self._http.post(
            self.url("allocation", f"/cases/{case_id}/close"),
            json={"outcome": outcome},
            headers=self._bearer(Role.TEAM_MANAGER, "campaign-manager"),
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
            headers=self._bearer(Role.TEAM_MANAGER, auditor_id),
        )
        return response.status_code

    async def monthly_report(self, month: str, district: str | None) -> dict[str, Any]:
        params = {"month": month} | ({"district": district} if district else {})
        response = await self._http.get(
            self.url("reporting", "/reports/monthly"),
            params=params,
            headers=self._bearer(Role.PERFORMANCE_ANALYST, "campaign-analyst"),
        )
        response.raise_for_status()
        report: dict[str, Any] = response.json()
        return report
