"""A worker's outgoing links: one `LinkSender` per peer device and one to the client. Thread-safe.

Deployments say where each peer listens (its data socket), with which public key, and how the
link to it is emulated. A link keeps running across deployments while its address, key and
emulation are unchanged, so a new plan version (a live switch) neither resets a link's queue nor
restarts its bandwidth trace; a peer that moved, changed its key or restarted gets a new link.
"""

from __future__ import annotations

import logging
import statistics
import threading
from typing import Any

import numpy as np

from coinfer.runtime import wire
from coinfer.runtime.links import LinkSecurity, LinkSender
from coinfer.runtime.routing import CLIENT
from coinfer.runtime.security import KeyPair
from coinfer.runtime.worker.deployment import Deployment, LinkDoc
from coinfer.runtime.worker.keepalive import Keepalives
from coinfer.shaping import LinkShaper

log = logging.getLogger(__name__)


class Outgoing:
    def __init__(self, context: Any, name: str, keys: KeyPair | None) -> None:
        self.context, self.name, self.keys = context, name, keys
        self._links: dict[str, LinkSender] = {}
        self._client: LinkSender | None = None
        # device -> (address, key, incarnation) of its worker, as the latest deployment names it
        self._peers: dict[str, tuple[str, bytes | None, str]] = {}
        self._shapers: dict[str, LinkShaper] = {}
        self._link_docs: dict[str, LinkDoc] = {}
        self._incarnations: dict[str, str] = {}  # device -> the incarnation its open link was made for
        self._lock = threading.Lock()
        self.keepalives = Keepalives(context, name)
        self.keepalives.start()

    def connect(self, d: Deployment) -> None:
        """Open (or re-aim) the links this deployment sends over, and the one to its client."""
        with self._lock:
            client_key = d.client_key
            if self._client is None or (self._client.address, _key(self._client)) != (d.client_address, client_key):
                if self._client is not None:
                    self._client.stop()
                self._client = self._start(d.client_address, client_key, None, "client")
            for device, address in d.peers.items():
                peer = self._peers[device] = (address, d.peer_keys.get(device), d.peer_incarnations.get(device, ""))
                self.keepalives.aim(device, address, self._security(peer[1]), peer[2])
            for target, doc in d.link_docs.items():
                if self._link_docs.get(target) != doc:
                    self._link_docs[target] = doc
                    self._shapers[target] = d.shapers[target]
                    if target in self._links:
                        self._links[target].shaper = d.shapers[target]
            for target in {t for ts in d.route.sends.values() for t in ts}:
                self._open(target)

    def to(self, target: str) -> LinkSender | None:
        """The sender to `target` at its latest address; None if no deployment named it."""
        with self._lock:
            return self._open(target)

    def _open(self, target: str) -> LinkSender | None:
        peer = self._peers.get(target)
        if peer is None:
            return None
        link = self._links.get(target)
        if link is None or (link.address, _key(link), self._incarnations.get(target, "")) != peer:
            # a peer that moved, changed its key or restarted: a restarted worker refuses the old
            # connection's reconnect until it is deployed to, and ZeroMQ never retries a refused
            # CURVE handshake, so the link is opened afresh, after this deployment named the peer
            if link is not None:
                link.stop()
            address, key, incarnation = peer
            link = self._links[target] = self._start(address, key, self._shapers.get(target), target)
            self._incarnations[target] = incarnation
        return link

    def _start(self, address: str, server_key: bytes | None, shaper: LinkShaper | None, name: str) -> LinkSender:
        link = LinkSender(self.context, address, shaper, "none", name, sender=self.name,
                          security=self._security(server_key))
        link.start()
        return link

    def _security(self, server_key: bytes | None) -> LinkSecurity | None:
        return LinkSecurity(self.keys, server_key) if self.keys is not None and server_key else None

    def send_tensor(self, target: str, version: int, request_id: int, name: str, array: np.ndarray,
                    codec: str = "none") -> None:
        link = self.client if target == CLIENT else self.to(target)
        if link is None:
            raise KeyError(f"{self.name} has no link to {target}")
        link.send_tensor(version, request_id, name, array, codec)

    @property
    def client(self) -> LinkSender | None:
        with self._lock:
            return self._client

    def to_client(self, kind: wire.Kind, body: dict[str, Any], request_id: int = 0, plan_version: int = 0) -> None:
        """A JSON message to the client, if one has deployed here (else only the log has it)."""
        client = self.client
        if client is not None:
            client.send_json(kind, body, request_id, plan_version)

    def stats(self) -> dict[str, Any]:
        """Per link (the client's under CLIENT): messages, bytes, dropped reports, median delivery time."""
        with self._lock:
            links = {**self._links, **({CLIENT: self._client} if self._client is not None else {})}
            return {target: {"messages": link.stats.messages, "wire_bytes": link.stats.wire_bytes,
                             "raw_bytes": link.stats.raw_bytes, "dropped_reports": link.stats.dropped_reports,
                             "delivery_s": statistics.median(link.stats.delivery_s) if link.stats.delivery_s else None}
                    for target, link in links.items()}

    def stop(self) -> None:
        with self._lock:
            links = [*self._links.values(), *([self._client] if self._client else [])]
        self.keepalives.stop()
        for link in links:
            link.stop()
        for link in links:
            link.join(timeout=2)
        self.keepalives.join(timeout=2)


def _key(link: LinkSender) -> bytes | None:
    return None if link.security is None else link.security.server_key
