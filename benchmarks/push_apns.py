"""APNs call-push throughput and latency: cloudphone.push.apns against aioapns.

Both clients push the same VoIP notification (same headers, same provider-token auth, one
HTTP/2 connection each, ``--concurrency`` pushes in flight) to the same local APNs server
(``cloudphone.testing.apns``), which runs in a child process so that it has its own core and
the clients are measured, not the server. Rounds alternate between the clients; the best
round of each counts.

aioapns has no setting for the APNs host: ``APNsProductionClientProtocol.APNS_SERVER`` and
``APNS_PORT`` are class attributes, so the benchmark patches them to 127.0.0.1 and the local
port, and passes an SSL context that trusts the test CA (with ALPN h2).

The last line printed is one JSON object; ``ratio`` = our pushes/s over aioapns's.
Usage: python benchmarks/push_apns.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from common import machine_details

BUNDLE = "org.example.phone"


def _serve(directory: Path) -> None:
    """Child process: run the local APNs server until stdin closes."""
    from cloudphone.testing.apns import LocalApns, make_apns_key
    from cloudphone.testing.tls import TestCertificates

    async def main() -> None:
        certs = TestCertificates(directory)
        key = make_apns_key(directory)
        server = LocalApns(certs, record=False)
        server.trust_key(key, [BUNDLE])
        await server.start()
        info = {
            "port": server.port,
            "ca_file": str(certs.ca_file),
            "key_path": str(key.key_path),
            "team_id": key.team_id,
            "key_id": key.key_id,
        }
        print(json.dumps(info), flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # parent gone or done
        await server.stop()

    asyncio.run(main())


_SERVER_PID = 0


def _server_cpu() -> float:
    """CPU seconds used so far by the server child (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{_SERVER_PID}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def _drive(
    send: Callable[[int], Awaitable[bool]], pushes: int, concurrency: int
) -> dict[str, float]:
    latencies: list[float] = []
    failures = 0
    next_index = 0

    async def worker() -> None:
        nonlocal next_index, failures
        while next_index < pushes:
            i = next_index
            next_index += 1
            started = time.perf_counter()
            ok = await send(i)
            latencies.append(time.perf_counter() - started)
            failures += not ok

    started = time.perf_counter()
    cpu_started = time.process_time()
    server_cpu_started = _server_cpu()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    client_cpu = time.process_time() - cpu_started
    server_cpu = _server_cpu() - server_cpu_started
    latencies.sort()
    if failures:
        raise SystemExit(f"{failures} pushes failed")
    return {
        "pushes_per_s": round(pushes / elapsed, 1),
        "p50_ms": round(_percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
        # CPU per push shows where the time goes on a shared machine: this process (the
        # client) and the server child.
        "client_cpu_us": round(client_cpu / pushes * 1e6),
        "server_cpu_us": round(server_cpu / pushes * 1e6),
    }


def _tokens(n: int) -> list[str]:
    return [f"{i:064x}" for i in range(n)]


async def _ours(info: dict[str, Any], pushes: int, concurrency: int) -> dict[str, float]:
    from cloudphone.push import (
        ApnsConfig,
        ApnsTokenAuth,
        Caller,
        Delivered,
        IncomingCall,
        PushToken,
    )
    from cloudphone.push.apns import ApnsConnection, ApnsService, ProviderToken, ssl_context_for
    from cloudphone.push.destinations import AllowedDestinations

    auth = ApnsTokenAuth(
        team_id=info["team_id"], key_id=info["key_id"], key_path=Path(info["key_path"])
    )
    config = ApnsConfig(
        bundle_id=BUNDLE,
        endpoint=f"https://127.0.0.1:{info['port']}",
        auth=auth,
        ca_file=Path(info["ca_file"]),
    )
    connection = ApnsConnection(
        config.url,
        AllowedDestinations([config.url]),
        ssl_context=ssl_context_for(config),
        idle_timeout=config.idle_timeout_s,
    )
    service = ApnsService(config, connection, ProviderToken(auth))
    tokens = [PushToken(t) for t in _tokens(1000)]
    now = dt.datetime.now(dt.UTC)
    call = IncomingCall(
        Caller("sip:alice@example.org", "Alice"),
        "bench-call@example.org",
        now,
        now + dt.timedelta(seconds=30),
    )

    async def send(i: int) -> bool:
        return isinstance(await service.send(tokens[i % 1000], call), Delivered)

    await _drive(send, 200, 50)  # connect and warm up
    try:
        return await _drive(send, pushes, concurrency)
    finally:
        await connection.aclose()


async def _aioapns(info: dict[str, Any], pushes: int, concurrency: int) -> dict[str, float]:
    import aioapns.connection
    from aioapns import APNs, NotificationRequest, PushType

    # aioapns cannot be pointed at another host: patch the class attributes it connects to.
    aioapns.connection.APNsProductionClientProtocol.APNS_SERVER = "127.0.0.1"
    aioapns.connection.APNsProductionClientProtocol.APNS_PORT = int(info["port"])
    context = ssl.create_default_context(cafile=info["ca_file"])
    context.set_alpn_protocols(["h2"])
    client = APNs(
        key=info["key_pem"],  # aioapns wants the PEM text, not a path
        key_id=info["key_id"],
        team_id=info["team_id"],
        topic=f"{BUNDLE}.voip",
        max_connections=1,  # one HTTP/2 connection, like ours
        ssl_context=context,
    )
    tokens = _tokens(1000)
    now = int(time.time())
    payload = {
        "aps": {},
        "type": "incoming_call",
        "call_id": "bench-call@example.org",
        "caller_uri": "sip:alice@example.org",
        "caller_name": "Alice",
        "sent_at": now,
        "ring_until": now + 30,
    }

    async def send(i: int) -> bool:
        result = await client.send_notification(
            NotificationRequest(
                device_token=tokens[i % 1000],
                message=payload,
                time_to_live=30,
                priority=10,
                push_type=PushType.VOIP,
            )
        )
        return bool(result.is_successful)

    await _drive(send, 200, 50)
    try:
        return await _drive(send, pushes, concurrency)
    finally:
        client.pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (< 30 s)")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve)
        return

    # The sender logs at info level on connect/mint only; keep per-push paths quiet anyway.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    logging.getLogger("aioapns").setLevel(logging.CRITICAL)

    pushes, rounds = (2000, 3) if args.quick else (20000, 3)
    with tempfile.TemporaryDirectory(prefix="bench-apns-") as directory:
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", directory],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        global _SERVER_PID
        _SERVER_PID = server.pid
        try:
            assert server.stdout is not None
            info = json.loads(server.stdout.readline())
            info["key_pem"] = Path(info["key_path"]).read_text()
            print(machine_details("h2", "aioapns"))
            print(
                f"local APNs on 127.0.0.1:{info['port']} (child process); {pushes} VoIP pushes "
                f"per round, {args.concurrency} in flight, {rounds} rounds per client"
            )
            results: dict[str, list[dict[str, float]]] = {"ours": [], "aioapns": []}
            for round_no in range(rounds):
                for name, run in (("ours", _ours), ("aioapns", _aioapns)):
                    result = asyncio.run(run(info, pushes, args.concurrency))
                    results[name].append(result)
                    print(f"round {round_no + 1} {name:8s} {result}")
        finally:
            if server.stdin is not None:
                server.stdin.close()
            server.wait(timeout=10)

    best = {name: max(rs, key=lambda r: r["pushes_per_s"]) for name, rs in results.items()}
    summary = {
        "benchmark": "push_apns",
        "pushes_per_round": pushes,
        "concurrency": args.concurrency,
        "ours": best["ours"],
        "aioapns": best["aioapns"],
        "ratio": round(best["ours"]["pushes_per_s"] / best["aioapns"]["pushes_per_s"], 2),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
