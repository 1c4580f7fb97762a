"""End-to-end throughput, latency and memory of the platform on the embedded servers.

Starts the platform exactly as ``make run`` does (on free ports, in a scratch data folder),
posts referrals over HTTP with a few concurrent partners, and waits until reporting has
counted every allocation. Prints the front door's latency, the end-to-end rate and each
process's resident memory. Usage: ``make bench`` or ``python -m benchmarks.pipeline -n 500``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from shared.auth import Role, mint_token, new_secret
from shared.embedded import free_port

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("referral", "allocation", "audit", "reporting")
FIXTURE: dict[str, Any] = json.loads((ROOT / "tests" / "fixtures" / "referral.json").read_text())


SECRET = new_secret()
ADMIN = {
    "authorization": "Bearer " + mint_token(SECRET.encode(), sub="bench", role=Role.ADMINISTRATOR)
}
ANALYST = {
    "authorization": "Bearer "
    + mint_token(SECRET.encode(), sub="bench", role=Role.PERFORMANCE_ANALYST, districts=["*"])
}


def submission(number: int) -> dict[str, Any]:
    child = {**FIXTURE["children"][0], "family_name": f"Family{number}"}
    return {**FIXTURE, "submission_id": f"bench-{number}", "children": [child]}


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def process_name(command: str) -> str:
    if "services." in command:
        return command.split()[-1]
    return "tansu (broker)" if "tansu" in command else "secantusdb (database)"


def processes_of(root: int) -> dict[int, str]:
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if parent == root:
            found[int(entry.name)] = command
    return found


async def run(count: int, concurrency: int, ports: dict[str, int]) -> dict[str, Any]:
    base = {service: f"http://127.0.0.1:{port}" for service, port in ports.items()}
    async with httpx.AsyncClient(timeout=30) as client:
        deadline = time.monotonic() + 120
        while True:
            try:
                answers = [await client.get(f"{url}/health") for url in base.values()]
                if all(answer.status_code == 200 for answer in answers):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("platform did not start")
            await asyncio.sleep(0.5)

        issued = await client.post(
            f"{base['referral']}/partner-keys",
            json={"partner_id": FIXTURE["partner_id"], "routes": [FIXTURE["route"]]},
            headers=ADMIN,
        )
        key = {"x-partner-key": issued.json()["key"]}
        latencies: list[float] = []
        queue: asyncio.Queue[int] = asyncio.Queue()
        for number in range(count):
            queue.put_nowait(number)

        async def partner() -> None:
            while not queue.empty():
                number = queue.get_nowait()
                sent = time.perf_counter()
                response = await client.post(
                    f"{base['referral']}/referrals", json=submission(number), headers=key
                )
                latencies.append(time.perf_counter() - sent)
                if response.status_code != 202:
                    raise SystemExit(f"referral {number} refused: {response.text}")

        started = time.perf_counter()
        await asyncio.gather(*(partner() for _ in range(concurrency)))
        accepted_in = time.perf_counter() - started
        while True:
            month = datetime.now(UTC).strftime("%Y-%m")
            report = (
                await client.get(
                    f"{base['reporting']}/reports/monthly", params={"month": month}, headers=ANALYST
                )
            ).json()
            if report["allocations"]["count"] >= count:
                break
            if time.perf_counter() - started > 600:
                raise SystemExit(f"only {report['allocations']} after 600s")
            await asyncio.sleep(0.2)
        end_to_end = time.perf_counter() - started
    latencies.sort()
    return {
        "accepted_in": accepted_in,
        "end_to_end": end_to_end,
        "p50": statistics.median(latencies),
        "p95": latencies[int(len(latencies) * 0.95) - 1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", "--referrals", type=int, default=300)
    parser.add_argument("-c", "--concurrency", type=int, default=8)
    args = parser.parse_args()
    ports = {service: free_port() for service in SERVICES}
    with tempfile.TemporaryDirectory() as data_dir:
        env = {
            name: value
            for name, value in os.environ.items()
            if name not in {"KAFKA_BOOTSTRAP_SERVERS", "MONGODB_URI"}
        }
        env |= {
            "EARLYHELP_DATA_DIR": data_dir,
            "EARLYHELP_KAFKA_PORT": str(free_port()),
            "EARLYHELP_MONGODB_PORT": str(free_port()),
            "EARLYHELP_LOG_LEVEL": "WARNING",
            "EARLYHELP_AUTH_SECRET": SECRET,
            **{f"EARLYHELP_{name.upper()}_PORT": str(port) for name, port in ports.items()},
        }
        platform = subprocess.Popen(
            [sys.executable, "-m", "services"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            figures = asyncio.run(run(args.referrals, args.concurrency, ports))
            memory = {
                process_name(command): resident_mb(pid)
                for pid, command in processes_of(platform.pid).items()
            }
        finally:
            platform.send_signal(signal.SIGINT)
            platform.wait(60)
    count = args.referrals
    print(f"referrals: {count}, concurrent partners: {args.concurrency}")
    print(
        f"front door: {count / figures['accepted_in']:.0f} referrals/s, "
        f"latency p50 {figures['p50'] * 1000:.0f} ms, p95 {figures['p95'] * 1000:.0f} ms"
    )
    print(
        f"end to end (accepted, allocated and counted): {figures['end_to_end']:.1f} s, "
        f"{count / figures['end_to_end']:.0f} referrals/s"
    )
    print("resident memory at the end:")
    for name, megabytes in sorted(memory.items()):
        print(f"  {name:<22} {megabytes:7.1f} MB")


if __name__ == "__main__":
    main()
