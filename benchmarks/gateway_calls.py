"""Push gateway, part 2: how fast a held call wakes the phone, and how fast calls relay.

Measures, in one run:
  * wake latency: an INVITE for a sleeping instance arriving on the gateway's provider-side
    socket -> the push request handed to the push dispatcher (the HTTP/2 request is written
    right after), p50/p99 at increasing call rates (SIPp as the provider, uac_unanswered.xml:
    INVITE, 180 with X-Push-Progress, 480 when the short hold ends). The device lookup is an
    in-memory stand-in here (production reads the device row: add one indexed SELECT);
  * relayed calls/s: SIPp UAC -> gateway -> SIPp UAS (INVITE/180/200/ACK/BYE through the
    record-routing relay, app flow already bound) against SIPp UAC -> Kamailio (stateful
    proxy, record-route) -> SIPp UAS, same rate, same machine, same run.
"ratio" = our relayed calls/s / Kamailio's. The last line is one JSON object.

    python benchmarks/gateway_calls.py --quick      # under 30 s
    python benchmarks/gateway_calls.py
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from common import machine_details

from cloudphone.core.clock import SystemClock
from cloudphone.core.logging import configure_logging
from cloudphone.gateway.calls import CallRelay, WakeTarget
from cloudphone.gateway.edge import AppBinding, AppEdge, GatewayEndpoint
from cloudphone.gateway.engine import RegistrationEngine
from cloudphone.push import Delivered, Notification, PushToken
from cloudphone.push.service import Platform
from cloudphone.sip import Request, Response
from cloudphone.sipnet.transport import Flow
from cloudphone.testing.kamailio import free_port, run_kamailio
from cloudphone.testing.sipp import Sipp

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "tests" / "peers"
CONTACT_KEY = "c0ffee" * 4


class _Directory:
    async def devices(self, instance_id: str) -> list[WakeTarget]:
        return [WakeTarget("device", "app", "fcm", "token-" + "x" * 30, None)]


class _Push:
    """Records when each push request leaves the gateway for the push service."""

    def __init__(self) -> None:
        self.sent: dict[str, float] = {}

    async def send(
        self, app_id: str, platform: Platform, token: PushToken, notification: Notification
    ) -> Delivered:
        call_id = getattr(notification, "call_id", None)
        if call_id is not None and type(notification).__name__ == "IncomingCall":
            self.sent.setdefault(call_id, time.perf_counter())
        return Delivered(0.0)


class _Gateway:
    def __init__(self, hold_s: float) -> None:
        self.push = _Push()
        self.engine = RegistrationEngine(clock=SystemClock())
        self.endpoint = GatewayEndpoint(user_agent=None)
        self.edge = AppEdge(self.endpoint, instances=None)  # type: ignore[arg-type]
        self.relay = CallRelay(
            self.endpoint,
            self.engine,
            self.edge,
            _Directory(),
            self.push,  # type: ignore[arg-type]
            SystemClock(),
            hold_s=hold_s,
        )
        self.arrived: dict[str, float] = {}
        accept = self.endpoint.accept

        def timed(message: Request | Response, flow: Flow) -> None:
            if isinstance(message, Request) and message.method == "INVITE":
                self.arrived.setdefault(message.call_id, time.perf_counter())
            accept(message, flow)

        self.engine.relay = timed

    async def start(self) -> tuple[str, int]:
        await self.engine._ensure_started()
        # One sleeping instance whose contact the "provider" (SIPp) calls directly.
        self.engine._by_contact[CONTACT_KEY] = "bench-instance"
        await self.endpoint.listen("UDP", "127.0.0.1", 0)
        return self.engine.udp_address

    def bind_app(self, port: int) -> None:
        listener = self.endpoint._udp[0]
        flow = self.endpoint.flows.udp_flow(listener, ("127.0.0.1", port))
        contact = f"sip:app@127.0.0.1:{port}"
        self.edge.bind(AppBinding("bench-instance", flow, contact, self.endpoint.now() + 3600))

    def wake_latencies_ms(self) -> list[float]:
        return sorted(
            (self.push.sent[c] - t) * 1000 for c, t in self.arrived.items() if c in self.push.sent
        )

    async def close(self) -> None:
        await self.relay.close()
        await self.engine.close()


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


def _counts(out: Path) -> tuple[int, int]:
    """(successful, failed) calls from SIPp's final statistics screen."""
    text = out.read_text(errors="replace")
    ok = re.findall(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", text)
    failed = re.findall(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", text)
    return (int(ok[-1]) if ok else 0, int(failed[-1]) if failed else 0)


def _rate(out: Path, elapsed: float) -> float:
    """Calls/s carried; a run that failed more than 1 % of its calls carried nothing."""
    ok, failed = _counts(out)
    if failed > 0.01 * max(ok + failed, 1):
        return 0.0
    return ok / elapsed


async def _wake(sipp: Sipp, rate: int, calls: int) -> dict[str, Any]:
    gateway = _Gateway(hold_s=0.5)
    host, port = await gateway.start()
    run = sipp.start(
        "uac_unanswered.xml",
        local_port=free_port(),
        remote=(host, port),
        service=CONTACT_KEY,
        injection=["bob;;sip.test"],
        calls=calls,
        extra=["-r", str(rate), "-l", str(rate * 3)],
        name=f"wake-{rate}",
    )
    await asyncio.to_thread(run.wait, calls / rate + 30)
    latencies = gateway.wake_latencies_ms()
    await gateway.close()
    return {
        "rate": rate,
        "calls": calls,
        "pushed": len(latencies),
        "p50_ms": round(_pct(latencies, 0.50), 3),
        "p99_ms": round(_pct(latencies, 0.99), 3),
    }


async def _relay_gateway(sipp: Sipp, rate: int, calls: int) -> float:
    gateway = _Gateway(hold_s=30)
    host, port = await gateway.start()
    uas_port = free_port()
    uas = sipp.start("uas_call_fast.xml", local_port=uas_port, calls=calls, name="relay-uas-gw")
    sipp.wait_listening(uas_port)
    gateway.bind_app(uas_port)
    started = time.perf_counter()
    uac = sipp.start(
        "uac_call.xml",
        local_port=free_port(),
        remote=(host, port),
        service=CONTACT_KEY,
        injection=["bob;;sip.test"],
        calls=calls,
        extra=["-r", str(rate), "-l", str(rate * 3), "-d", "0"],
        name="relay-uac-gw",
    )
    await asyncio.to_thread(uac.wait, calls / rate + 60)
    elapsed = time.perf_counter() - started
    uas.stop()
    await gateway.close()
    return _rate(uac.workdir / "relay-uac-gw.out", elapsed)


async def _relay_kamailio(sipp: Sipp, kam_host: str, kam_port: int, rate: int, calls: int) -> float:
    uas_port = free_port()
    reg = sipp.start(
        "reg_auth.xml",
        local_port=free_port(),
        remote=(kam_host, kam_port),
        injection=[
            f"bob;[authentication username=bob password=bob-secret];sip.test;"
            f"127.0.0.1:{uas_port};300"
        ],
        name="relay-reg-kam",
    )
    await asyncio.to_thread(reg.wait, 10)
    uas = sipp.start("uas_call_fast.xml", local_port=uas_port, calls=calls, name="relay-uas-kam")
    sipp.wait_listening(uas_port)
    started = time.perf_counter()
    uac = sipp.start(
        "uac_call.xml",
        local_port=free_port(),
        remote=(kam_host, kam_port),
        service="bob",
        injection=["carol;;sip.test"],
        calls=calls,
        extra=["-r", str(rate), "-l", str(rate * 3), "-d", "0"],
        name="relay-uac-kam",
    )
    await asyncio.to_thread(uac.wait, calls / rate + 60)
    elapsed = time.perf_counter() - started
    uas.stop()
    return _rate(uac.workdir / "relay-uac-kam.out", elapsed)


async def _capacity(
    ladder: list[int], seconds: int, run: Callable[[int, int], Awaitable[float]]
) -> float:
    best = 0.0
    for rate in ladder:
        carried = await run(rate, rate * seconds)
        if carried == 0.0:
            break
        best = max(best, carried)
    return best


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run, under 30 s")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    configure_logging("warning", "json", stream=io.StringIO())  # a log line is not free
    sipp_binary = shutil.which("sipp") or "/usr/bin/sipp"
    kamailio_binary = shutil.which("kamailio") or "/usr/sbin/kamailio"
    rates = [50, 200] if args.quick else [100, 250, 500]
    wake_calls = 150 if args.quick else 1500
    # Offered rates climb until a run fails more than 1 % of its calls: capacity is the
    # best rate carried cleanly, for each of the two relays.
    ladder = [200] if args.quick else [100, 150, 200, 250, 300, 350, 400, 500, 600, 800]
    seconds = 2 if args.quick else 6

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sipp = Sipp(sipp_binary, scenarios=PEERS / "sipp", workdir=work)
        try:
            wake = [await _wake(sipp, rate, wake_calls) for rate in rates]
            ours = await _capacity(
                ladder, seconds, lambda rate, calls: _relay_gateway(sipp, rate, calls)
            )
            with run_kamailio(
                work / "kamailio",
                binary=kamailio_binary,
                config=PEERS / "kamailio" / "kamailio.cfg",
                dbtext=PEERS / "kamailio" / "dbtext",
            ) as kam:
                theirs = await _capacity(
                    ladder,
                    seconds,
                    lambda rate, calls: _relay_kamailio(sipp, kam.host, kam.port, rate, calls),
                )
        finally:
            sipp.stop_all()

    print(machine_details("uvloop"))
    for row in wake:
        print(
            f"wake latency at {row['rate']:>4} calls/s: p50 {row['p50_ms']:.3f} ms, "
            f"p99 {row['p99_ms']:.3f} ms ({row['pushed']}/{row['calls']} pushed)"
        )
    print(
        f"relayed calls/s (best clean rate, offered {ladder}): gateway {ours:.1f}, "
        f"Kamailio {theirs:.1f}"
    )
    result = {
        "benchmark": "gateway_calls",
        "quick": args.quick,
        "wake": wake,
        "relay_offered_rates": ladder,
        "gateway_calls_per_s": round(ours, 1),
        "kamailio_calls_per_s": round(theirs, 1),
        "ratio": round(ours / theirs, 3) if theirs else None,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
