"""Nobody else gets in: keys, the ZAP gate, revocation, encryption on the wire, and the insecure opt-out."""

from __future__ import annotations

import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("zmq")

from coinfer.cli import main
from coinfer.errors import KeyFileError, UnreachableError
from coinfer.runtime.client import Client, ClientSecurity
from coinfer.runtime.local import LocalWorkers
from coinfer.runtime.reference import example_inputs
from coinfer.runtime.run import RunOptions, deploy, run_plan
from coinfer.runtime.security import (
    AuthorizedKeys,
    Gate,
    load_keypair,
    load_public_keys,
    new_keypair,
    write_keypair,
)
from coinfer.runtime.worker import Worker, WorkerConfig
from tests.runtime.conftest import DEVICES, TWO_STAGES, tiny_problem


def test_keys_new_writes_a_private_secret_and_a_public_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "new", "edge", "laptop", "--dir", str(tmp_path)]) == 0
    secret = tmp_path / "edge.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "edge.key").stat().st_mode) == 0o644
    pair = load_keypair(secret)
    assert load_public_keys(tmp_path / "edge.key") == {"edge": pair.public}
    assert set(load_public_keys(tmp_path)) == {"edge", "laptop"}
    capsys.readouterr()
    assert main(["keys", "list", str(tmp_path)]) == 0 and pair.public.decode() in capsys.readouterr().out
    assert main(["keys", "new", "edge", "--dir", str(tmp_path)]) == 2  # never overwritten


def test_a_missing_or_public_only_key_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no key file"):
        load_keypair(tmp_path / "nope.key_secret")
    write_keypair(tmp_path, "w")
    with pytest.raises(KeyFileError, match="only a public key"):
        load_keypair(tmp_path / "w.key")


def test_the_gate_admits_clients_everywhere_and_peers_only_on_data_of_their_deployment() -> None:
    client, peer, stranger = new_keypair(), new_keypair(), new_keypair()
    gate = Gate(AuthorizedKeys(keys=[client.public]))
    gate.allow_peers(3, {"edge": peer.public})
    assert gate.admit("control", client.public) and gate.admit("data", client.public)
    assert gate.admit("data", peer.public) and not gate.admit("control", peer.public)
    assert gate.peer_device(3, peer.public) == "edge" and gate.peer_device(4, peer.public) is None
    assert not gate.admit("data", stranger.public) and not gate.admit("control", stranger.public)
    gate.forget(3)
    # once undeployed its tensors are refused, but a peer a deployment named may still connect for
    # keepalives and probes (plan version 0): a device the plan moved away from must be heard coming back
    assert gate.peer_device(3, peer.public) is None
    assert gate.admit("data", peer.public) and gate.any_peer_device(peer.public) == "edge"
    assert not gate.admit("control", peer.public) and not gate.admit("data", stranger.public)


def test_a_worker_refuses_a_public_address_without_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "--listen", "0.0.0.0:0", "--name", "edge"]) == 2
    assert "refusing to listen on 0.0.0.0 without keys" in capsys.readouterr().err
    assert main(["worker", "--listen", "0.0.0.0:0", "--name", "edge", "--key", "k.key_secret"]) == 2


def _stranger(workers: LocalWorkers) -> Client:
    """A client with a key pair of its own, which no worker was given."""
    assert workers.security is not None
    security = ClientSecurity(new_keypair(), workers.security.worker_keys)
    return Client({d: workers.endpoint(d) for d in DEVICES}, timeout_s=1.0, security=security)


@pytest.mark.parametrize("op", [{"op": "health"}, {"op": "deploy", "plan_version": 1},
                                {"op": "undeploy", "plan_version": 1},
                                {"op": "probe", "target": "b", "sizes_bytes": [8]}, {"op": "shutdown"}])
def test_an_unknown_key_cannot_reach_a_worker_at_all(workers: LocalWorkers, op: dict) -> None:
    plan, problem = tiny_problem("cnn", TWO_STAGES)
    with workers.client() as client:
        deploy(client, plan, problem, workers.endpoint, RunOptions(plan_version=71))
    with _stranger(workers) as stranger, pytest.raises(UnreachableError, match="this client's public key"):
        stranger.call("a", op)
    with workers.client() as client:  # untouched: still up, still holding its deployment
        health = client.check("a", {"op": "health"})
        assert 71 in health["versions"] and health["compute"] == "alive"


def test_a_plain_client_cannot_talk_to_a_secure_worker(workers: LocalWorkers) -> None:
    with Client({"a": workers.endpoint("a")}, timeout_s=1.0) as plain, pytest.raises(UnreachableError):
        plain.call("a", {"op": "shutdown"})
    with workers.client() as client:
        assert client.check("a", {"op": "health"})["ok"]


@pytest.fixture
def revocable(tmp_path: Path) -> Iterator[tuple[Worker, Path, ClientSecurity]]:
    """A worker in this process whose authorized keys are a directory the test can change."""
    keys, allowed = tmp_path / "keys", tmp_path / "allowed"
    allowed.mkdir()
    write_keypair(keys, "w")
    public, _ = write_keypair(keys, "client")
    (allowed / "client.key").write_bytes(public.read_bytes())
    config = WorkerConfig("tcp://127.0.0.1:0", "w", tmp_path / "cache", keys=load_keypair(keys / "w.key_secret"),
                          authorized=AuthorizedKeys(allowed))
    worker = Worker(config)
    thread = threading.Thread(target=worker.serve_forever, daemon=True)
    thread.start()
    worker_key = load_keypair(keys / "w.key_secret").public
    security = ClientSecurity(load_keypair(keys / "client.key_secret"), {"w": worker_key})
    try:
        yield worker, allowed, security
    finally:
        worker.stopping.set()
        thread.join(timeout=10)


def test_a_revoked_client_key_is_refused_from_its_next_message(revocable: tuple[Worker, Path, ClientSecurity]) -> None:
    worker, allowed, security = revocable
    with Client({"w": worker.endpoint}, timeout_s=5.0, security=security) as client:
        assert client.check("w", {"op": "health"})["ok"]
        time.sleep(0.01)  # a new modification time for the directory
        (allowed / "client.key").unlink()
        reply = client.call("w", {"op": "shutdown"})  # the connection is open, but the key no longer counts
        assert not reply["ok"] and "not authorised" in reply["error"]
        assert not worker.stopping.is_set()


class _Recorder:
    """A TCP forwarder that keeps every byte it passes on (what someone on the network would see)."""

    def __init__(self, target_port: int) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.seen = bytearray()
        self.target_port = target_port
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                inbound, _ = self.server.accept()
            except OSError:
                return
            outbound = socket.create_connection(("127.0.0.1", self.target_port))
            for a, b in ((inbound, outbound), (outbound, inbound)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        while data := _recv(a):
            self.seen += data
            b.sendall(data)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(1 << 16)
    except OSError:
        return b""


@pytest.mark.parametrize("secure", [True, False])
def test_tensors_on_the_wire_are_encrypted_unless_the_run_is_insecure(secure: bool) -> None:
    plan, problem = tiny_problem("cnn", "stem..head@a")
    x = {"input": np.full((1, 3, 16, 16), 1234.5678, dtype=np.float32)}  # a pattern easy to find
    with LocalWorkers(("a",), secure=secure) as workers, workers.client() as client:
        health = client.check("a", {"op": "health"})
        recorder = _Recorder(health["data_port"])
        client.connect_data("a", f"tcp://127.0.0.1:{recorder.port}")  # inputs go through the recorder
        report = run_plan(plan, problem, client, workers.endpoint, RunOptions(requests=2, plan_version=1), x)
    assert report["ok"] == 2
    plain = x["input"].tobytes()[:256]
    assert len(recorder.seen) > x["input"].nbytes  # the inputs did pass through
    assert (plain in recorder.seen) is not secure


def test_local_runs_are_secure_by_default() -> None:
    plan, problem = tiny_problem("cnn", TWO_STAGES)
    with LocalWorkers(("a", "b")) as workers:
        assert workers.security is not None
        assert all("--key" in " ".join(p.args) for p in workers.processes.values())  # type: ignore[arg-type]
        with workers.client() as client:
            run_plan(plan, problem, client, workers.endpoint, RunOptions(requests=1, plan_version=1),
                     example_inputs(problem.graph))
