"""A throwaway Kamailio (registrar + proxy) for integration tests, on free loopback ports.

:func:`run_kamailio` copies the db_text users into a private run directory, writes the TLS
configuration when a certificate is given, starts ``kamailio -DD -E`` (no daemon: the process
we started is the main process, so stopping it stops exactly this instance) and waits until
every listener accepts.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cloudphone.testing.peers import missing_peer

__all__ = ["KamailioInstance", "free_port", "run_kamailio"]

LOOPBACK = "127.0.0.1"
# the project's peer configuration, when running from a source checkout
PEERS = Path(__file__).resolve().parents[3] / "tests" / "peers" / "kamailio"
TLS_MODULE = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so")
DEFAULT_USERS = {
    "alice": "alice-secret",
    "bob": "bob-secret",
    "carol": "carol-secret",
    "gateway": "gateway-secret",
}


@dataclass
class KamailioInstance:
    host: str
    port: int  # UDP and TCP
    tls_port: int | None
    rundir: Path
    process: subprocess.Popen[bytes]
    domain: str = "sip.test"
    users: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_USERS))

    @property
    def log_file(self) -> Path:
        return self.rundir / "kamailio.log"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def port_for(self, transport: str) -> int:
        if transport.upper() == "TLS":
            if self.tls_port is None:
                raise RuntimeError("this Kamailio has no TLS listener")
            return self.tls_port
        return self.port

    def kamcmd(self, *args: str) -> str:
        """Run ``kamcmd`` against this instance's control socket (e.g. ``ul.dump``)."""
        binary = shutil.which("kamcmd") or "/usr/sbin/kamcmd"
        result = subprocess.run(
            [binary, "-s", f"unix:{self.rundir}/kamailio_ctl", *args],
            capture_output=True,
            timeout=10,
            check=False,
        )
        return result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")


def free_port(*, udp_too: bool = True) -> int:
    """A loopback port free for TCP (and UDP) right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((LOOPBACK, 0))
            port = int(tcp.getsockname()[1])
            if not udp_too:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((LOOPBACK, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port found")


_TLS_CFG = """\
[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
private_key = {key}
certificate = {cert}

[client:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
"""


def _accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((LOOPBACK, port)) == 0


@contextlib.contextmanager
def run_kamailio(
    rundir: Path,
    *,
    binary: str,
    config: Path = PEERS / "kamailio.cfg",
    dbtext: Path = PEERS / "dbtext",
    certificate: tuple[Path, Path] | None = None,
    defines: tuple[str, ...] = (),
    shm_mb: int = 64,
    start_timeout: float = 15.0,
) -> Iterator[KamailioInstance]:
    """Start Kamailio in ``rundir`` on free ports and stop it (SIGTERM, then SIGKILL).

    ``certificate`` (cert file, key file) adds a TLS listener; ``defines`` are the config's
    ``-A`` switches (``WITH_CALLAUTH``, ``WITH_DEBUG`` ...). Users are in ``dbtext``
    (alice/alice-secret, bob/bob-secret, carol/carol-secret, gateway/gateway-secret).
    """
    rundir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(rundir / "dbtext", ignore_errors=True)
    shutil.copytree(dbtext, rundir / "dbtext")
    port = free_port()
    tls_port: int | None = None
    args = [
        binary,
        "-f",
        str(config),
        "-DD",
        "-E",
        "-Y",
        str(rundir),
        "-w",
        str(rundir),
        "-m",
        str(shm_mb),
        "-M",
        "8",
        "--substdef",
        f"!SIPPORT!{port}!g",
        "--substdef",
        f"!RUNDIR!{rundir}!g",
    ]
    if certificate is not None:
        if not TLS_MODULE.exists():
            missing_peer("kamailio-tls-modules is not installed")
        tls_port = free_port(udp_too=False)
        cert, key = certificate
        (rundir / "tls.cfg").write_text(_TLS_CFG.format(cert=cert, key=key))
        args += ["--substdef", f"!TLSPORT!{tls_port}!g", "-A", "WITH_TLS"]
    for define in defines:
        args += ["-A", define]
    log = (rundir / "kamailio.log").open("wb")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    instance = KamailioInstance(LOOPBACK, port, tls_port, rundir, process)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"kamailio exited ({process.returncode}):\n{instance.log_tail()}"
                )
            if _accepts(port) and (tls_port is None or _accepts(tls_port)):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"kamailio did not start listening:\n{instance.log_tail()}")
            time.sleep(0.05)
        yield instance
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        log.close()
