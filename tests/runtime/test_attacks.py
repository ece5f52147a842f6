"""A worker survives anything a peer sends: each attack of the deployable-runtime issue, and random frames.

The frames come from a socket holding the authorised client key, so they reach every parser
(a key the worker does not know never gets a frame in: test_security.py). After each attack the
worker must answer health and serve a real request bit-identically.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

zmq = pytest.importorskip("zmq")

from coinfer.errors import WorkerError  # noqa: E402
from coinfer.runtime import deploy as deploy_module  # noqa: E402
from coinfer.runtime import wire  # noqa: E402
from coinfer.runtime.client import Client  # noqa: E402
from coinfer.runtime.delivery import run_requests  # noqa: E402
from coinfer.runtime.local import LocalWorkers  # noqa: E402
from coinfer.runtime.reference import example_inputs, reference_outputs  # noqa: E402
from coinfer.runtime.run import RunOptions, deploy  # noqa: E402
from tests.runtime.conftest import TWO_STAGES, raw_dealer, tiny_problem  # noqa: E402

VERSION = 81


@pytest.fixture(scope="module")
def serving(workers: LocalWorkers) -> Iterator[tuple[Client, dict[str, Any]]]:
    """A client with plan version 81 (cnn over a and b) deployed, and the input it serves."""
    plan, problem = tiny_problem("cnn", TWO_STAGES)
    with workers.client(timeout_s=5.0) as client:
        deploy(client, plan, problem, workers.endpoint, RunOptions(plan_version=VERSION))
        yield client, {"x": example_inputs(problem.graph), "graph": problem.graph}


def _still_serves(client: Client, serving_state: dict[str, Any], request_id: int) -> None:
    assert client.check("a", {"op": "health"})["compute"] == "alive"
    x = serving_state["x"]
    outcome = run_requests(client, "a", VERSION, ("linear",), lambda _: x, 1, timeout_s=10, first_id=request_id)[0]
    assert outcome.ok, outcome.errors
    assert np.array_equal(outcome.outputs["linear"], reference_outputs(serving_state["graph"], x)["linear"])


def _control_reply(sock: Any, frames: list[Any], timeout_s: float = 5.0) -> dict[str, Any]:
    sock.send_multipart(frames)
    assert sock.poll(int(timeout_s * 1000)), "no reply: the worker hung or died"
    return wire.read_json(wire.unpack(sock.recv_multipart()))


def _stray_error(client: Client, timeout_s: float = 5.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not client.stray_errors:
        client.collect({}, (), 0.1)
    assert client.stray_errors, "the worker reported nothing"
    return str(client.stray_errors.pop()["error"])


def test_a_deployment_naming_os_abort_as_its_model_source_imports_nothing(
        workers: LocalWorkers, serving: tuple[Client, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    client, state = serving
    real = deploy_module.plan_to_dict

    def sourced(plan: Any, problem: Any) -> dict[str, Any]:
        doc = real(plan, problem)
        doc["graph"]["source"]["spec"] = "python:os:abort"  # what killed a worker before: now only a label
        return doc

    monkeypatch.setattr(deploy_module, "plan_to_dict", sourced)
    plan, problem = tiny_problem("cnn", TWO_STAGES)
    deploy(client, plan, problem, workers.endpoint, RunOptions(plan_version=VERSION + 1))
    _still_serves(client, state, 1)


def test_a_program_calling_anything_but_an_aten_kernel_is_refused(
        workers: LocalWorkers, serving: tuple[Client, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    client, state = serving
    real = deploy_module.deploy_body

    def poisoned(*args: Any, **kwargs: Any) -> dict[str, Any]:
        body = real(*args, **kwargs)
        body["program"] = copy.deepcopy(body["program"])  # the client's cached program stays as it was
        for call in body["program"].get("calls", {}).values():
            call["target"] = "os.abort"
        return body

    monkeypatch.setattr(deploy_module, "deploy_body", poisoned)
    plan, problem = tiny_problem("cnn", TWO_STAGES)
    with pytest.raises(WorkerError, match=r"target 'os.abort' is not of the form aten.NAME.OVERLOAD"):
        deploy(client, plan, problem, workers.endpoint, RunOptions(plan_version=VERSION + 2))
    _still_serves(client, state, 2)


def test_a_tensor_of_shape_0_by_2_to_the_62_is_refused(workers: LocalWorkers,
                                                       serving: tuple[Client, dict[str, Any]]) -> None:
    client, state = serving
    sock = raw_dealer(workers, client, "a", "data")
    header = wire.Header(wire.Kind.TENSOR, VERSION, 5, "input", "float32", (0, 2**62))
    sock.send_multipart(wire.pack(header, b"", b""))
    assert "dimension over" in _stray_error(client)
    sock.close()
    _still_serves(client, state, 3)


def test_a_control_message_of_100000_nested_brackets_is_refused(workers: LocalWorkers,
                                                                serving: tuple[Client, dict[str, Any]]) -> None:
    client, state = serving
    sock = raw_dealer(workers, client, "a", "control")
    body = b'{"op": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    reply = _control_reply(sock, wire.pack(wire.Header(wire.Kind.CONTROL, 0, 0, "deploy"), b"", body))
    assert not reply["ok"] and "nests 100001 deep" in reply["error"]
    sock.close()
    _still_serves(client, state, 4)


CASES = ["bomb", "frames", "declared", "json-array", "blob-unknown", "blob-path", "wrong-source", "op-types"]


@pytest.mark.parametrize("case", CASES)
def test_malformed_and_hostile_messages_are_refused_and_serving_goes_on(
        workers: LocalWorkers, serving: tuple[Client, dict[str, Any]], case: str) -> None:
    client, state = serving
    control, data = raw_dealer(workers, client, "b", "control"), raw_dealer(workers, client, "a", "data")
    if case == "bomb":  # an lz4 frame whose shape claims 4 GiB once decoded
        header = wire.Header(wire.Kind.TENSOR, VERSION, 6, "input", "float32", (1 << 30,), "none+lz4")
        data.send_multipart(wire.pack(header, b"", b"\x04\x22\x4d\x18" + b"\0" * 64))
        assert "once decoded, over this receiver's limit" in _stray_error(client)
    elif case == "frames":
        data.send_multipart([b"x"] * (wire.MAX_FRAMES + 5))
        assert "frame(s)" in _stray_error(client)
    elif case == "declared":  # the header declares bytes the frames do not hold
        head = wire.pack(wire.Header(wire.Kind.TENSOR, VERSION, 7, "input", "float32", (4,)), b"", b"\0" * 16)
        raw = bytearray(head[0])
        raw[22:30] = (1 << 29).to_bytes(8, "little")  # `payload bytes` in the header: over the limit
        data.send_multipart([bytes(raw), b"", b"\0" * 16])
        assert "declares 536870912 payload bytes, over this receiver's limit" in _stray_error(client)
        raw[22:30] = (100).to_bytes(8, "little")  # within the limit, but not what the frames hold
        data.send_multipart([bytes(raw), b"", b"\0" * 16])
        assert "payload has 16 bytes, header says 100" in _stray_error(client)
    elif case == "json-array":
        reply = _control_reply(control, wire.pack(wire.Header(wire.Kind.CONTROL, 0, 0, "x"), b"", b"[1, 2]"))
        assert not reply["ok"] and "not an object" in reply["error"]
    elif case == "blob-unknown":
        header = wire.Header(wire.Kind.BLOB, VERSION, 0, "ab" * 32, "uint8", (0, 4))
        reply = _control_reply(control, wire.pack(header, b"", b"evil"))
        assert not reply["ok"] and "no pending deployment here lists that blob" in reply["error"]
    elif case == "blob-path":
        reply = _control_reply(control, wire.pack(wire.Header(wire.Kind.BLOB, VERSION, 0, "../../etc/passwd", "uint8",
                                                              (0, 4)), b"", b"evil"))
        assert not reply["ok"] and "not a sha256" in reply["error"]
    elif case == "wrong-source":  # the client may send graph inputs only, never a value a peer computes
        frames = wire.tensor_frames(np.zeros((1, 8, 16, 16), np.float32), "add", 8, VERSION)
        b_data = raw_dealer(workers, client, "b", "data")
        b_data.send_multipart(frames)
        assert "came from <client>, but the plan has a send it" in _stray_error(client)
        b_data.close()
    elif case == "op-types":
        for body in ({"op": 7}, {"op": "undeploy", "plan_version": "all"}, {"op": "cancel", "plan_version": -1},
                     {"op": "probe", "target": "a", "sizes_bytes": [1 << 40]}):
            reply = _control_reply(control, wire.json_frames(wire.Kind.CONTROL, body))  # type: ignore[arg-type]
            assert not reply["ok"], body
    control.close()
    data.close()
    _still_serves(client, state, 100 + CASES.index(case))


def test_a_corrupted_weight_blob_is_dropped_and_the_deployment_cannot_activate(
        workers: LocalWorkers, serving: tuple[Client, dict[str, Any]], tmp_path: Any) -> None:
    client, state = serving
    from coinfer.runtime.packaging import packager_for
    from coinfer.runtime.routing import route

    plan, problem = tiny_problem("cnn", "stem..head@c")
    packager = packager_for(problem.graph)
    package = packager.package(route(plan, packager.index, problem.origin)["c"])
    body = deploy_module.deploy_body(plan, problem, "c", package, {"a": "tcp://127.0.0.1:1", "b": "tcp://127.0.0.1:1"},
                                     client, client.sink_endpoint, RunOptions(plan_version=VERSION + 3), 0.0,
                                     ("a", "b", "c"))
    body["blobs"]["00" * 32] = {"bytes": 64, "kind": "tensor"}  # a blob no real content hashes to
    assert "00" * 32 in client.check("c", body)["missing"]
    with pytest.raises(WorkerError, match=r"hash to .* not to its name"):
        client.send_blobs("c", VERSION + 3, ["00" * 32], lambda _: b"\1" * 64, {}, 5.0)
    with pytest.raises(WorkerError, match="have not arrived yet"):
        client.check("c", {"op": "activate", "plan_version": VERSION + 3})
    _still_serves(client, state, 20)


FRAME = st.one_of(st.binary(max_size=64), st.sampled_from([b"", b"CNF3", b"{}", b'{"op": "health"}']))


def _mutated(valid: list[bytes], data: st.DataObject) -> list[bytes]:
    frames = [bytearray(f) for f in valid]
    for _ in range(data.draw(st.integers(0, 4))):
        i = data.draw(st.integers(0, len(frames) - 1))
        if frames[i]:
            j = data.draw(st.integers(0, len(frames[i]) - 1))
            frames[i][j] = data.draw(st.integers(0, 255))
    return [bytes(f) for f in frames]


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_random_and_mutated_frames_never_stop_a_worker(workers: LocalWorkers,
                                                       serving: tuple[Client, dict[str, Any]],
                                                       data: st.DataObject) -> None:
    client, _ = serving
    kind = data.draw(st.sampled_from(["random", "tensor", "control"]))
    if kind == "random":
        frames = data.draw(st.lists(FRAME, min_size=0, max_size=5))
    elif kind == "tensor":
        valid = wire.tensor_frames(np.zeros((1, 3, 16, 16), np.float32), "input", 9, VERSION)
        frames = _mutated([bytes(f) for f in valid], data)
    else:
        valid = wire.json_frames(wire.Kind.CONTROL, {"op": "stats", "plan_version": VERSION})
        frames = _mutated([bytes(f) for f in valid], data)
    sock = _fuzz_sockets(workers, client)[data.draw(st.sampled_from(["control", "data"]))]
    if frames:
        sock.send_multipart(frames)
    assert client.call("a", {"op": "health"}, 5.0)["compute"] == "alive"


_SOCKETS: dict[str, Any] = {}


def _fuzz_sockets(workers: LocalWorkers, client: Client) -> dict[str, Any]:
    """One control and one data socket for every example (replies on control are left unread)."""
    if not _SOCKETS:
        _SOCKETS["control"] = raw_dealer(workers, client, "a", "control")
        _SOCKETS["data"] = raw_dealer(workers, client, "a", "data")
    return _SOCKETS


def test_after_the_fuzzing_the_worker_still_serves(serving: tuple[Client, dict[str, Any]]) -> None:
    client, state = serving
    for sock in _SOCKETS.values():
        sock.close()
    _SOCKETS.clear()
    client.stray_errors.clear()
    _still_serves(client, state, 30)
    assert json.dumps(client.check("a", {"op": "stats", "plan_version": VERSION}))  # its statistics still serialise
