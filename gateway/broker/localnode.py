"""A private RabbitMQ node for the tests, ``ics2gw demo --amqp`` and the benchmark: Debian's ``rabbitmq-server``
started in a directory of ours with its own node name, cookie, ports (AMQP, distribution, epmd) and data, on
127.0.0.1, and stopped at the end. Never the system service. ``make test`` installs the package; without it the
AMQP tests are skipped with a loud reason and ``demo --amqp`` says what to install."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from gateway.conformance.confgen import free_port, port_open

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
CTL = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")


def available() -> str | None:
    """None if a node can be started here, else why not."""
    if not SERVER.exists() or not CTL.exists():
        return "rabbitmq-server is not installed (Debian package rabbitmq-server; `make test` installs it)"
    return None


@dataclass
class RabbitNode:
    base: Path
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    epmd_port: int = field(default_factory=free_port)
    user: str = "ics2gw-test"
    password: str = field(default_factory=lambda: secrets.token_hex(12))
    proc: subprocess.Popen[bytes] | None = None
    # amqps: (CA file that verifies clients, server certificate, its key); a TLS listener on tls_port beside the
    # plain one, and with verify_peer the broker asks for a client certificate and refuses a connection without one
    tls: tuple[Path, Path, Path] | None = None
    verify_peer: bool = True
    tls_port: int = field(default_factory=free_port)

    @property
    def node(self) -> str:
        return f"ics2gwtest{self.port}@localhost"

    @property
    def url(self) -> str:
        return f"amqp://127.0.0.1:{self.port}/"

    @property
    def tls_url(self) -> str:
        """The TLS listener by the server certificate's name (localhost), so that hostname checking applies."""
        return f"amqps://localhost:{self.tls_port}/"

    @property
    def url_with_credentials(self) -> str:
        return f"amqp://{self.user}:{self.password}@127.0.0.1:{self.port}/"

    def env(self) -> dict[str, str]:
        b = self.base
        return {**{k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")},
                "HOME": str(b), "RABBITMQ_NODENAME": self.node, "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(self.port), "RABBITMQ_DIST_PORT": str(self.dist_port),
                "ERL_EPMD_PORT": str(self.epmd_port), "ERL_EPMD_ADDRESS": "127.0.0.1",
                "RABBITMQ_MNESIA_BASE": str(b / "mnesia"),
                "RABBITMQ_LOG_BASE": str(b / "log"), "RABBITMQ_CONFIG_FILE": str(b / "rabbitmq"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(b / "enabled_plugins"), "RABBITMQ_PID_FILE": str(b / "pid")}

    def start(self, timeout: float = 120.0) -> RabbitNode:
        b = self.base
        for d in ("mnesia", "log"):
            (b / d).mkdir(parents=True, exist_ok=True)
        (b / "enabled_plugins").write_text("[].\n")
        conf = (f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
                f"default_user = {self.user}\ndefault_pass = {self.password}\n"
                "loopback_users = none\n"
                "disk_free_limit.absolute = 50MB\n")
        if self.tls is not None:
            ca, cert, key = self.tls
            verify = "verify_peer" if self.verify_peer else "verify_none"
            conf += (f"listeners.ssl.default = 127.0.0.1:{self.tls_port}\n"
                     f"ssl_options.cacertfile = {ca}\nssl_options.certfile = {cert}\nssl_options.keyfile = {key}\n"
                     f"ssl_options.verify = {verify}\n"
                     f"ssl_options.fail_if_no_peer_cert = {'true' if self.verify_peer else 'false'}\n"
                     "ssl_options.versions.1 = tlsv1.3\nssl_options.versions.2 = tlsv1.2\n")
        (b / "rabbitmq.conf").write_text(conf)
        cookie = b / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(16))
            os.chmod(cookie, 0o400)
        with open(b / "server.log", "ab") as out:
            self.proc = subprocess.Popen([str(SERVER)], env=self.env(), cwd=b, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited with {self.proc.returncode}:\n{self.tail()}")
            if port_open(self.port) and (self.tls is None or port_open(self.tls_port)):
                return self
            time.sleep(0.2)
        raise RuntimeError(f"rabbitmq-server did not listen on {self.port} within {timeout:.0f}s:\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join((self.base / "server.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def ctl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(CTL), "-n", self.node, *args], env=self.env(), capture_output=True, text=True,
                              timeout=timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.ctl("shutdown", timeout=60)
            except subprocess.TimeoutExpired:
                pass
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None

    def kill(self) -> None:
        """The broker dies at once (as a host failure would); its durable queues survive on disk."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        subprocess.run(["pkill", "-9", "-f", f"ics2gwtest{self.port}@"], capture_output=True)
        self.proc = None

    def close(self) -> None:
        self.stop()
        import glob
        epmd = shutil.which("epmd") or next(iter(sorted(glob.glob("/usr/lib/erlang/erts-*/bin/epmd"))), None)
        if epmd:
            subprocess.run([epmd, "-kill"], env=self.env(), capture_output=True)
        subprocess.run(["pkill", "-9", "-f", f"ics2gwtest{self.port}@"], capture_output=True)
