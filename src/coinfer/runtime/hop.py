"""Per-hop cost of coinfer's transport against a plain TCP socket, measured in the same run.

One hop = serialise a float32 tensor, send it, receive it in another process, turn it back into
an array, and acknowledge with one byte; the sender times that round trip. Both transports do
exactly the same work around the bytes (the raw socket's framing is an 8-byte length), so the
ratio is the price of coinfer's header and ZeroMQ. The receiver is a separate process so neither
side shares a GIL with the other.

With `curve=True` coinfer's side is what a secure deployment sends: CURVE-encrypted frames (a
fresh key pair per run for each side, the receiver's ZAP handler admitting the sender's key),
payloads in `wire.ENCRYPTED_CHUNK_BYTES` chunks. The raw socket stays plain: the ratio is then
the whole price of authentication and encryption.
"""

from __future__ import annotations

import multiprocessing
import socket
import statistics
import struct
import time
from typing import Any

import numpy as np

from coinfer.runtime import wire
from coinfer.runtime.security import (
    AuthorizedKeys,
    Gate,
    KeyPair,
    connect_securely,
    new_keypair,
    serve_securely,
    start_authenticator,
)

_LENGTH = struct.Struct("<Q")


def _raw_receiver(port_out: Any) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port_out.send(server.getsockname()[1])
    conn, _ = server.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    head = bytearray(_LENGTH.size)
    while True:
        if not _recv_exact(conn, memoryview(head)):
            return
        (size,) = _LENGTH.unpack(head)
        buffer = bytearray(size)
        if not _recv_exact(conn, memoryview(buffer)):
            return
        np.frombuffer(buffer, dtype=np.float32)
        conn.sendall(b"k")


def _recv_exact(conn: socket.socket, view: memoryview) -> bool:
    got = 0
    while got < len(view):
        n = conn.recv_into(view[got:])
        if n == 0:
            return False
        got += n
    return True


def _zmq_receiver(port_out: Any, keys: KeyPair | None, client_public: bytes | None) -> None:
    import zmq

    context = zmq.Context()
    if keys is not None and client_public is not None:
        start_authenticator(context, Gate(AuthorizedKeys(keys=[client_public])))
    router = context.socket(zmq.ROUTER)
    if keys is not None:
        serve_securely(router, keys, "data")
    port = router.bind_to_random_port("tcp://127.0.0.1")
    port_out.send(port)
    while True:
        identity, *frames = router.recv_multipart(copy=False)
        message = wire.unpack(frames)
        if message.header.kind is wire.Kind.CONTROL:
            return
        wire.read_tensor(message)
        router.send_multipart([identity, b"k"])


def measure_hop(size_bytes: int, repeats: int = 50, warmup: int = 5, curve: bool = False) -> dict[str, Any]:
    """Median round-trip seconds per hop for coinfer's transport (CURVE with `curve`) and a raw
    socket, and their ratio."""
    import zmq

    array = np.random.default_rng(0).standard_normal(max(1, size_bytes // 4)).astype(np.float32)
    server, client = (new_keypair(), new_keypair()) if curve else (None, None)
    spawn = multiprocessing.get_context("spawn")
    raw_pipe, raw_child = spawn.Pipe()
    zmq_pipe, zmq_child = spawn.Pipe()
    receivers = [spawn.Process(target=_raw_receiver, args=(raw_child,), daemon=True),
                 spawn.Process(target=_zmq_receiver, daemon=True,
                               args=(zmq_child, server, client.public if client else None))]
    for p in receivers:
        p.start()
    try:
        raw = socket.create_connection(("127.0.0.1", raw_pipe.recv()))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        context = zmq.Context()
        dealer = context.socket(zmq.DEALER)
        if server is not None and client is not None:
            connect_securely(dealer, client, server.public)
        dealer.connect(f"tcp://127.0.0.1:{zmq_pipe.recv()}")
        chunk = wire.ENCRYPTED_CHUNK_BYTES if curve else None
        raw_s, coinfer_s = [], []
        for i in range(warmup + repeats):
            # alternate the two so that machine noise hits both alike
            start = time.perf_counter()
            payload = np.ascontiguousarray(array).data.cast("B")
            raw.sendall(_LENGTH.pack(payload.nbytes))
            raw.sendall(payload)
            raw.recv(1)
            mid = time.perf_counter()
            dealer.send_multipart(wire.tensor_frames(array, "hop", i, 1, chunk_bytes=chunk), copy=array.nbytes < 65536)
            dealer.recv()
            end = time.perf_counter()
            if i >= warmup:
                raw_s.append(mid - start)
                coinfer_s.append(end - mid)
        dealer.send_multipart(wire.json_frames(wire.Kind.CONTROL, {"op": "stop"}))
        raw.close()
        dealer.close(linger=100)
        context.term()
    finally:
        for p in receivers:
            p.join(timeout=2)
            if p.is_alive():
                p.terminate()
    coinfer, plain = statistics.median(coinfer_s), statistics.median(raw_s)
    return {"bytes": int(array.nbytes), "repeats": repeats, "curve": curve, "coinfer_s": coinfer,
            "raw_socket_s": plain, "ratio": coinfer / plain, "added_s": coinfer - plain}
