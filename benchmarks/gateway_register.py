"""Push-gateway registration engine: N live instances registered against Kamailio.

Measures, in one run against the same Kamailio (UDP, digest auth):
  * burst rate: registrations/s while N instances register from cold (the start-up burst, here
    unthrottled: the service's own start-up rate limit is a setting);
  * steady CPU: process CPU per 1,000 instances while they refresh (short expiry, so the
    window sees refreshes), and RSS per instance;
  * the peer: SIPp's REGISTER rate (reg_auth.xml, 401 + digest + 200) against that Kamailio.
"ratio" = our burst rate / SIPp's rate. The last line is one JSON object.

    python benchmarks/gateway_register.py --quick      # N = 10,000, under a minute
    python benchmarks/gateway_register.py              # N = 100,000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine_details, rss_bytes

from cloudphone.core.clock import SystemClock
from cloudphone.gateway.engine import EngineTuning, RegistrationEngine
from cloudphone.gateway.upstream import RegistrationTarget
from cloudphone.testing.kamailio import KamailioInstance, run_kamailio

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "tests" / "peers"
AUTH_USER, AUTH_PASSWORD = "gateway", "gateway-secret"


class Counter:
    """A state sink that only counts, so the database is not what we measure."""

    def __init__(self) -> None:
        self.registered: set[str] = set()
        self.failed: dict[str, int | None] = {}

    async def registration_states(
        self, states: dict[str, tuple[bool, int | None, int | None]]
    ) -> None:
        for instance_id, (ok, status, _) in states.items():
            if ok:
                self.registered.add(instance_id)
                self.failed.pop(instance_id, None)
            else:
                self.failed[instance_id] = status


def _targets(n: int, kam: KamailioInstance, expiry: int) -> list[RegistrationTarget]:
    return [
        RegistrationTarget(
            instance_id=f"bench{i:06d}",
            contact_key=f"ck{i:030d}",
            address_of_record=f"sip:user{i:06d}@sip.test",
            registrar=f"127.0.0.1:{kam.port}",
            outbound_proxy=None,
            transport="udp",
            expiry=expiry,
            auth_username=bytearray(AUTH_USER.encode()),
            password=bytearray(AUTH_PASSWORD.encode()),
        )
        for i in range(n)
    ]


async def _ours(kam: KamailioInstance, n: int, steady_s: float) -> dict[str, float]:
    counter = Counter()
    engine = RegistrationEngine(
        clock=SystemClock(),
        sink=counter,
        tuning=EngineTuning(state_flush_interval_s=0.2, refresh_fraction=(0.5, 0.8)),
    )
    expiry = 20  # short, so the steady window sees refreshes (Kamailio min_expires is 10)
    gc.collect()
    rss_before = rss_bytes()
    targets = _targets(n, kam, expiry)
    started = time.perf_counter()
    for target in targets:
        await engine.register(target)
    while len(counter.registered) < n:
        await asyncio.sleep(0.01)
        if time.perf_counter() - started > 120:
            break
    burst_s = time.perf_counter() - started
    registered = len(counter.registered)
    del targets
    gc.collect()
    rss_after = rss_bytes()

    sent0 = _registers_sent(engine)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.perf_counter()
    await asyncio.sleep(steady_s)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    refreshes = _registers_sent(engine) - sent0
    wall = time.perf_counter() - wall0
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    still = sum(1 for i in counter.registered if engine.is_registered(i))
    await engine.close()
    return {
        "instances": n,
        "registered": registered,
        "failed": len(counter.failed),
        "burst_s": round(burst_s, 3),
        "burst_rate": round(registered / burst_s, 1),
        "steady_expiry_s": expiry,
        "steady_window_s": steady_s,
        "steady_refreshes_per_s": round(refreshes / wall, 1),
        "steady_cpu_per_1000": round(cpu / wall / (n / 1000), 5),
        "steady_still_registered": still,
        "rss_per_instance_bytes": round((rss_after - rss_before) / n),
    }


def _registers_sent(engine: RegistrationEngine) -> int:
    """REGISTERs sent so far: each binding's CSeq counts its own (RFC 3261 §10.2.4)."""
    return sum(b.cseq for b in engine._bindings.values())


def _sipp(kam: KamailioInstance, count: int, rate: int, workdir: Path) -> dict[str, float]:
    sipp = shutil.which("sipp")
    if sipp is None:
        raise SystemExit("sipp is not installed (Debian package sip-tester)")
    csv = workdir / "users.csv"
    lines = ["SEQUENTIAL"]
    for i in range(count):
        lines.append(
            f"sipp{i:06d};[authentication username={AUTH_USER} password={AUTH_PASSWORD}];"
            f"sip.test;127.0.0.1:5999;3600"
        )
    csv.write_text("\n".join(lines) + "\n")
    stats = workdir / "sipp"
    started = time.perf_counter()
    subprocess.run(
        [
            sipp,
            f"127.0.0.1:{kam.port}",
            "-sf",
            str(PEERS / "sipp" / "reg_auth.xml"),
            "-inf",
            str(csv),
            "-i",
            "127.0.0.1",
            "-p",
            "0",
            "-t",
            "u1",
            "-r",
            str(rate),
            "-m",
            str(count),
            "-l",
            str(rate * 2),
            "-nd",
            "-nostdin",
            "-trace_stat",
            "-stf",
            str(stats) + ".csv",
            "-timeout",
            "60s",
        ],
        check=False,
        capture_output=True,
        timeout=90,
        cwd=workdir,
    )
    elapsed = time.perf_counter() - started
    text = (stats.with_suffix(".csv")).read_text() if stats.with_suffix(".csv").exists() else ""
    ok = _last_stat(text, "SuccessfulCall(C)")
    failed = _last_stat(text, "FailedCall(C)")
    return {
        "registered": ok,
        "failed": failed,
        "elapsed_s": round(elapsed, 3),
        "rate": round(ok / elapsed, 1),
        "target_rate": rate,
    }


def _last_stat(csv_text: str, column: str) -> int:
    rows = [r.split(";") for r in csv_text.strip().splitlines()]
    if len(rows) < 2 or column not in rows[0]:
        return 0
    index = rows[0].index(column)
    return int(re.sub(r"\D", "", rows[-1][index]) or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 10,000 and short windows")
    parser.add_argument("--instances", type=int)
    args = parser.parse_args()
    n = args.instances or (10_000 if args.quick else 100_000)
    steady_s = 15.0 if args.quick else 60.0
    logging.disable(logging.CRITICAL)
    print(machine_details("cloudphone"))
    kamailio = shutil.which("kamailio") or "/usr/sbin/kamailio"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with run_kamailio(
            work / "kamailio",
            binary=kamailio,
            config=PEERS / "kamailio" / "kamailio.cfg",
            dbtext=PEERS / "kamailio" / "dbtext",
            defines=("AUTH_USER_DIFFERS",),
            shm_mb=1024,
        ) as kam:
            peer = _sipp(kam, min(n, 60_000), 8000, work)
            print(f"sipp  -> kamailio: {peer}")
            ours = asyncio.run(_ours(kam, n, steady_s))
            print(f"ours  -> kamailio: {ours}")
    ratio = ours["burst_rate"] / peer["rate"] if peer["rate"] else 0.0
    print(
        json.dumps(
            {"benchmark": "gateway_register", "ours": ours, "sipp": peer, "ratio": round(ratio, 3)}
        )
    )
    sys.exit(0)


if __name__ == "__main__":
    main()
