"""Starting the workers a plan needs as processes on this machine, and always stopping them.

Each worker is `python -m coinfer worker --listen tcp://HOST:0` (the kernel picks free ports,
so parallel runs never collide); the worker prints its endpoint as its first line, which is how
the launcher learns it. With a `NetnsTopology` each worker runs inside its device's network
namespace and binds every address there; peers then reach it over their shaped veth pair and the
client over the unshaped management link.

The default is the secure path, as on real devices: the launcher makes throwaway CURVE key pairs
(one per worker, one for the client) in its private temporary directory, gives each worker its
own secret and the client's public key, and `client()` connects with the client's pair. Each
worker's blob cache is a directory of its own (under `cache_dir`, else in the temporary one).
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from coinfer.errors import WorkerError
from coinfer.runtime.client import Client, ClientSecurity
from coinfer.runtime.security import load_keypair, write_keypair

if TYPE_CHECKING:
    from coinfer.runtime.netns import NetnsTopology

log = logging.getLogger(__name__)

READY_PREFIX = "coinfer worker listening on "


class LocalWorkers:
    """A context manager that runs one worker process per device and stops them on exit."""

    def __init__(self, devices: Sequence[str], threads: int = 1, topology: NetnsTopology | None = None,
                 start_timeout_s: float = 30.0, extra_args: Sequence[str] = (), *, secure: bool = True,
                 cache_dir: Path | None = None, cwd: Path | None = None) -> None:
        self.devices = tuple(devices)
        self.threads = threads
        self.topology = topology
        self.start_timeout_s = start_timeout_s
        self.extra_args = tuple(extra_args)
        self.processes: dict[str, subprocess.Popen[str]] = {}
        self.ports: dict[str, int] = {}
        self.logs: dict[str, Path] = {}
        self._log_dir = tempfile.TemporaryDirectory(prefix="coinfer-workers-")
        self.cache_dir = cache_dir or Path(self._log_dir.name) / "blobs"
        self.cwd = cwd  # where the worker processes run (None: here)
        self.security: ClientSecurity | None = None
        if secure:
            keys = Path(self._log_dir.name) / "keys"
            write_keypair(keys, "client")
            publics = {d: load_keypair(write_keypair(keys, d)[1]).public for d in self.devices}
            self.security = ClientSecurity(load_keypair(keys / "client.key_secret"), publics)

    @property
    def keys_dir(self) -> Path | None:
        """Where the throwaway keys are: client.key_secret and one DEVICE.key per worker (None: --insecure)."""
        return Path(self._log_dir.name) / "keys" if self.security is not None else None

    def __enter__(self) -> LocalWorkers:
        try:
            for device in self.devices:
                self._start(device)
            for device in self.devices:
                self._wait_ready(device)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self, timeout_s: float = 10.0, sink_host: str = "127.0.0.1") -> Client:
        """A client of these workers, with the run's keys."""
        return Client({d: self.endpoint(d, None) for d in self.devices}, sink_host, timeout_s, self.security)

    def endpoint(self, device: str, seen_from: str | None = None) -> str:
        """How `seen_from` (a device, or None for the client in the root namespace) reaches `device`."""
        port = self.ports[device]
        if self.topology is None:
            return f"tcp://127.0.0.1:{port}"
        if seen_from is None:
            return f"tcp://{self.topology.control_address(device)}:{port}"
        if seen_from == device:
            return f"tcp://127.0.0.1:{port}"
        return f"tcp://{self.topology.address(seen_from, device)}:{port}"

    def _start(self, device: str, port: int = 0) -> None:
        host = "127.0.0.1" if self.topology is None else "0.0.0.0"
        keys = Path(self._log_dir.name) / "keys"
        secure = ["--key", str(keys / f"{device}.key_secret"), "--authorized-keys", str(keys / "client.key")]
        command = [sys.executable, "-m", "coinfer", "worker", "--listen", f"tcp://{host}:{port}", "--name", device,
                   "--threads", str(self.threads), "--cache-dir", str(self.cache_dir / device),
                   *(secure if self.security is not None else ["--insecure"]), *self.extra_args]
        if self.topology is not None:
            command = [*self.topology.exec_prefix(device), *command]
        self.logs[device] = Path(self._log_dir.name) / f"{device}.log"
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "PYTHONUNBUFFERED": "1"}
        with open(self.logs[device], "a") as err:
            self.processes[device] = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, env=env,
                                                      cwd=self.cwd)
        log.debug("started worker %s: %s", device, " ".join(command))

    def _wait_ready(self, device: str) -> None:
        proc = self.processes[device]
        assert proc.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if selector.select(timeout=0.2):
                line = proc.stdout.readline()
                if line.startswith(READY_PREFIX):
                    self.ports[device] = int(line.strip().rsplit(":", 1)[1])
                    return
                if not line and proc.poll() is not None:
                    break
            elif proc.poll() is not None:
                break
        raise WorkerError(f"worker {device!r} did not start within {self.start_timeout_s:g} s"
                          f"{self._tail(device)}")

    def _tail(self, device: str) -> str:
        text = self.logs[device].read_text() if self.logs[device].is_file() else ""
        lines = [ln for ln in text.splitlines() if ln.strip()][-5:]
        return "; its log ends: " + " | ".join(lines) if lines else ""

    # -- failures, on purpose (the chaos benchmark and tests) ----------------------------------

    def kill(self, device: str) -> None:
        """SIGKILL the worker of `device`, as a crash or a pulled plug would end it."""
        proc = self.processes[device]
        proc.kill()
        proc.wait(timeout=5)

    def pause(self, device: str) -> None:
        """SIGSTOP the worker: it holds its sockets open and answers nothing, like a hung device."""
        self.processes[device].send_signal(signal.SIGSTOP)

    def resume(self, device: str) -> None:
        self.processes[device].send_signal(signal.SIGCONT)

    def restart(self, device: str) -> None:
        """Start `device`'s worker again on its old ports, key and blob cache (a device coming back)."""
        old = self.processes.get(device)
        if old is not None and old.poll() is None:
            raise WorkerError(f"worker {device!r} is still running; kill it first")
        if old is not None and old.stdout is not None:
            old.stdout.close()
        self._start(device, self.ports[device])
        self._wait_ready(device)

    def stop(self) -> None:
        """Terminate every worker (SIGTERM, then SIGKILL after 3 s); safe to call twice."""
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # a paused worker cannot act on SIGTERM
                proc.terminate()
        for device, proc in self.processes.items():
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                log.warning("worker %s ignored SIGTERM; killing it", device)
                proc.kill()
                proc.wait(timeout=3)
            if proc.stdout is not None:
                proc.stdout.close()
        self.processes.clear()
        self._log_dir.cleanup()
