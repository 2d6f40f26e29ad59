"""Running SIPp scenarios from tests: a UAC or UAS in the background, bounded in time.

SIPp exits 0 when every call of the run succeeded, 1 when some failed, other codes on
errors; its error trace (``-trace_err``) is kept in the work directory for the failure
message.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Sipp", "SippRun"]

LOOPBACK = "127.0.0.1"
_TRANSPORT_FLAG = {"UDP": "u1", "TCP": "t1", "TLS": "l1"}


@dataclass
class SippRun:
    process: subprocess.Popen[bytes]
    workdir: Path
    name: str

    def wait(self, timeout: float = 30.0) -> int:
        """Exit code; the process is killed if it overruns ``timeout``."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            return -1

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def diagnostics(self) -> str:
        """SIPp's own output and error trace, for assertion messages."""
        parts = []
        for path in sorted(self.workdir.glob(f"{self.name}*")):
            if path.suffix in (".log", ".out") or "errors" in path.name:
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)


class Sipp:
    """SIPp bound to one scenario directory and one work directory."""

    def __init__(self, binary: str, *, scenarios: Path, workdir: Path) -> None:
        self.binary = binary
        self.scenarios = scenarios
        self.workdir = workdir
        self._runs: list[SippRun] = []

    def start(
        self,
        scenario: str,
        *,
        local_port: int,
        remote: tuple[str, int] | None = None,
        transport: str = "UDP",
        service: str | None = None,
        injection: Sequence[str] | None = None,
        calls: int = 1,
        extra: Sequence[str] = (),
        name: str | None = None,
    ) -> SippRun:
        """Start ``scenario`` (a file in the scenario dir, or a built-in such as ``uas``)."""
        name = name or f"sipp-{scenario.removesuffix('.xml')}-{local_port}"
        args = [self.binary]
        if remote is not None:
            args.append(f"{remote[0]}:{remote[1]}")
        path = self.scenarios / scenario
        args += ["-sf", str(path)] if path.exists() else ["-sn", scenario]
        args += [
            "-i",
            LOOPBACK,
            "-p",
            str(local_port),
            "-t",
            _TRANSPORT_FLAG[transport.upper()],
            "-m",
            str(calls),
            "-nostdin",
            "-trace_err",
            "-error_file",
            str(self.workdir / f"{name}-errors.log"),
        ]
        if service is not None:
            args += ["-s", service]
        if injection is not None:
            csv = self.workdir / f"{name}.csv"
            csv.write_text("SEQUENTIAL\n" + "\n".join(injection) + "\n")
            args += ["-inf", str(csv)]
        args += list(extra)
        out = (self.workdir / f"{name}.out").open("wb")
        process = subprocess.Popen(
            args, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        out.close()
        run = SippRun(process, self.workdir, name)
        self._runs.append(run)
        return run

    def wait_listening(self, port: int, transport: str = "UDP", timeout: float = 5.0) -> None:
        """Give a UAS time to bind: SIPp has no readiness signal, so watch the socket table
        (never by binding the port ourselves, which could make SIPp's own bind fail)."""
        table = Path("/proc/net/udp" if transport.upper() == "UDP" else "/proc/net/tcp")
        needle = f":{port:04X} "
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                lines = table.read_text().splitlines()[1:]
            except OSError:
                time.sleep(0.5)  # no /proc: just give SIPp a moment
                return
            # local_address is the second column, e.g. "0100007F:13C4"
            if any(needle in f"{line.split()[1]} " for line in lines if len(line.split()) > 1):
                return
            time.sleep(0.05)

    def stop_all(self) -> None:
        for run in self._runs:
            run.stop()
