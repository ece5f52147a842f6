"""Keepalives: a few bytes to every peer several times a second, so that a link that stops carrying
traffic is seen by its receiver.

Each worker sends, on a connection of its own to every peer its deployments name, a zero-byte
tensor named `KEEPALIVE` (plan version 0, never given to a request) every `KEEPALIVE_S`. The
receiver notes when it last heard each peer (coinfer.runtime.worker.server) and its heartbeat
answer carries those ages to the client's watchdog, which declares a link down when its receiver
has not heard its sender for the watchdog's bound while both ends answer (coinfer.runtime.watchdog).

A connection of its own, not the data link's: a data link may rightly be silent for seconds while
one large tensor crosses a slow link (the in-process shaper holds it; the kernel's queue holds
its packets), and keepalives behind it would make a slow link look dead. Sent past the shaper,
they cost nothing measurable; over a kernel-shaped link they share its queue, which holds at most
`coinfer.runtime.netns.QUEUE_S` of traffic.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import numpy as np

from coinfer.runtime import wire
from coinfer.runtime.links import LinkSecurity, peer_socket

log = logging.getLogger(__name__)

KEEPALIVE = "<keepalive>"
KEEPALIVE_S = 0.1
# each keepalive connection is opened afresh this often: ZeroMQ never retries a CURVE handshake its
# peer refused (a restarted worker refuses keys until a deployment names them)
RECONNECT_S = 2.0
Peer = tuple[str, "LinkSecurity | None"]  # address, security


class Keepalives(threading.Thread):
    def __init__(self, context: Any, sender: str) -> None:
        super().__init__(name="coinfer-keepalives", daemon=True)
        self.context, self.sender = context, sender
        self._wanted: dict[str, tuple[Peer, str]] = {}  # device -> (peer, incarnation)
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def aim(self, device: str, address: str, security: LinkSecurity | None, incarnation: str) -> None:
        """Keep `device` (at `address`) hearing from this worker; a new address, key or incarnation
        gets a new connection."""
        with self._lock:
            self._wanted[device] = ((address, security), incarnation)

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        import zmq

        sockets: dict[str, tuple[tuple[Peer, str], Any]] = {}
        opened: dict[str, float] = {}  # device -> time.monotonic() its connection was opened
        frames = wire.tensor_frames(np.zeros(0, dtype=np.uint8), KEEPALIVE, 0, 0)
        try:
            while not self._stopping.wait(KEEPALIVE_S):
                with self._lock:
                    wanted = dict(self._wanted)
                now = time.monotonic()
                for device, aim in wanted.items():
                    held = sockets.get(device)
                    if held is None or held[0] != aim or now - opened.get(device, now) > RECONNECT_S:
                        if held is not None:
                            held[1].close(linger=0)
                        (address, security), _ = aim
                        sockets[device] = (aim, peer_socket(self.context, address, self.sender, security))
                        opened[device] = now
                    with contextlib.suppress(zmq.Again):  # a peer that cannot take it simply does not hear it
                        sockets[device][1].send_multipart(frames, zmq.NOBLOCK)
        except Exception:  # never fatal to the worker: the watchdog then sees these links go quiet
            log.exception("keepalives stopped")
        finally:
            for _, sock in sockets.values():
                sock.close(linger=0)
