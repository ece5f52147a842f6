"""Kernel link emulation: one network namespace per device, veth pairs between them, shaped by tc.

Each device's worker runs in its own namespace, so its traffic to another device leaves through the
one veth pair that joins the two, and a token-bucket filter (tbf) on the sending end holds the
transfer to the link's bandwidth, in the kernel, for any program (ZeroMQ, plain sockets, iperf)::

    root namespace (coordinator)
      ├── <prefix><tag>c0 ── ctl  ns "a"  p1 ══ p0  ns "b"  ctl ── <prefix><tag>c1
      └── ...                     p2 ══ p0  ns "c"  ...         (one unshaped control veth per device)

Addressing: the pair joining devices i < j is the k-th /30 of 10.213.0.0/17 (i's end .1, j's .2);
these live only inside namespaces, so topologies running side by side may reuse them. The control
veths live in the root routing table, so each gets a /30 of 10.213.128.0/17 that no route or
address of the host (nor another live topology) overlaps, chosen under a file lock.

Only bandwidth is shaped here. Propagation delay is added in-process by coinfer's transport
(`coinfer.shaping`), because netem is not available on every kernel coinfer runs on.

Cleanup: `__exit__` deletes every veth explicitly and then every namespace, also when the body
raised, and again harmlessly if called twice. A run that crashed leaves names that carry its pid;
`remove_stale` deletes those whose process is gone. See docs/link-shaping.md.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import math
import os
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, ip_interface, ip_network
from pathlib import Path
from types import TracebackType

from coinfer.errors import LinkShapingError, UserInputError
from coinfer.shaping import MIN_TRACE_BITS_PER_S

log = logging.getLogger(__name__)

PAIR_NETWORK = IPv4Network("10.213.0.0/17")
CONTROL_NETWORK = IPv4Network("10.213.128.0/17")
MAX_DEVICES = 128  # C(128, 2) = 8128 pair /30s fit in PAIR_NETWORK's 8192
FRAME_BYTES = 1514  # a full 1500-byte MTU packet plus its 14-byte Ethernet header, as tbf counts it
# TCP payload in a full frame (1500 - 20 IP - 32 TCP with timestamps). tbf limits frames, so a link
# whose payload bandwidth is B is shaped at B / TCP_PAYLOAD_FRACTION (docs/link-shaping.md).
TCP_PAYLOAD_FRACTION = 1448 / FRAME_BYTES
BURST_S = 0.002  # see tbf_params
QUEUE_S = 0.3
MAX_LIMIT_BYTES = 64 * 2**20
_COMMAND_TIMEOUT_S = 10.0
_MISSING = ("Cannot find device", "No such file or directory", "Cannot delete qdisc with handle of zero")
_ROUTE_TYPES = {"unicast", "local", "broadcast", "multicast", "throw", "unreachable", "prohibit", "blackhole",
                "nat", "anycast"}


@dataclass(frozen=True)
class ShapedLink:
    """One direction of a link: traffic from `source` to `target` at most this fast (inf = unshaped)."""

    source: str
    target: str
    bandwidth_bits_per_s: float


@dataclass(frozen=True)
class TbfParams:
    """The tbf settings for one rate: `rate` in bits per second, `burst` and `limit` in bytes."""

    rate_bits_per_s: int
    burst_bytes: int
    limit_bytes: int


def tbf_params(bits_per_s: float) -> TbfParams:
    """tbf settings that hold a link to `bits_per_s` (at least MIN_TRACE_BITS_PER_S, as an outage drains).

    burst: the bucket must hold a whole frame, or tbf drops every full-size packet; two frames leave
    room for rounding in tc's tick arithmetic. Above that, 2 ms of data: tbf's watchdog is an
    hrtimer (the kernel's HZ does not bound it), and 2 ms absorbs timer lateness on a busy machine
    without losing tokens, while a transfer that starts on an idle link gains at most 2 ms (or two
    frames' worth at low rates) over the ideal bytes / bandwidth. GSO packets larger than the
    bucket are segmented by tbf itself, so offloads stay on (measured: benchmarks/netns_shaping_accuracy.py).

    limit: 0.3 s of data bounds queueing delay when several flows share the link; TCP keeps the
    queue far shorter on its own (TSQ), and a drop only makes it back off. At least 32 frames, so
    TCP's initial window of 10 segments always fits; at most 64 MiB (tbf's limit is 32 bits).
    """
    if math.isnan(bits_per_s) or bits_per_s < 0:
        raise UserInputError(f"a link bandwidth must be a non-negative number of bits per second, not {bits_per_s}")
    rate = max(round(bits_per_s), round(MIN_TRACE_BITS_PER_S))
    burst = max(2 * FRAME_BYTES, math.ceil(rate / 8 * BURST_S))
    limit = min(max(32 * FRAME_BYTES, math.ceil(rate / 8 * QUEUE_S)), MAX_LIMIT_BYTES)
    return TbfParams(rate, burst, max(limit, burst))


def _run(args: Sequence[str], *, missing_ok: bool = False) -> str:
    """Run one command; a failure raises LinkShapingError naming the command and its stderr.

    With `missing_ok`, a failure because the thing to delete is already gone counts as success.
    """
    command = shlex.join(args)
    log.debug("$ %s", command)
    try:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LinkShapingError(f"`{command}` could not run: {exc}; is iproute2 installed?") from exc
    if done.returncode != 0:
        stderr = " ".join(done.stderr.split())
        if missing_ok and any(marker in stderr for marker in _MISSING):
            return ""
        raise LinkShapingError(f"`{command}` failed (exit {done.returncode}): {stderr or 'no message'}")
    return done.stdout


def _tbf_command(namespace: str, interface: str, bits_per_s: float) -> list[str]:
    params = tbf_params(bits_per_s)
    # `replace` adds the qdisc if there is none and otherwise changes it in place, keeping its queue.
    return ["tc", "-n", namespace, "qdisc", "replace", "dev", interface, "root", "tbf",
            "rate", f"{params.rate_bits_per_s}bit", "burst", str(params.burst_bytes), "limit", str(params.limit_bytes)]


def _check_prefix(prefix: str) -> None:
    # The prefix goes into root interface names: 7 + 4 (tag) + 1 + 3 (index) = IFNAMSIZ - 1.
    if not re.fullmatch(r"[a-z][a-z0-9]{0,6}", prefix):
        raise UserInputError(f"namespace prefix must be 1 to 7 lowercase letters or digits starting with a letter, "
                             f"not {prefix!r}")


def _namespace_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"{re.escape(prefix)}-(\d+)-([0-9a-f]{{4}})-(\d+|probe)")


def _control_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"{re.escape(prefix)}([0-9a-f]{{4}})c(\d+)")


def _list_namespaces() -> list[str]:
    return [line.split()[0] for line in _run(["ip", "netns", "list"]).splitlines() if line.strip()]


def _list_root_links() -> list[str]:
    # `ip -o link` prints "7: name@peer: <...> ..."; the name ends at '@' or ':'.
    return [line.split(":")[1].strip().split("@")[0] for line in _run(["ip", "-o", "link", "show"]).splitlines()
            if line.count(":") >= 2]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _used_networks() -> list[IPv4Network]:
    """Every IPv4 network the root namespace already routes or has an address in (default route aside)."""
    used: list[IPv4Network] = []
    for line in _run(["ip", "-4", "-o", "addr", "show"]).splitlines():
        fields = line.split()
        if "inet" in fields:
            network = ip_interface(fields[fields.index("inet") + 1]).network
            if isinstance(network, IPv4Network):
                used.append(network)
    for line in _run(["ip", "-4", "route", "show", "table", "all"]).splitlines():
        fields = line.split()
        if fields and fields[0] in _ROUTE_TYPES:
            fields = fields[1:]
        if not fields or fields[0] == "default":
            continue
        try:
            network = ip_network(fields[0], strict=False)
        except ValueError:
            continue
        if isinstance(network, IPv4Network) and network.prefixlen > 0:
            used.append(network)
    return used


@contextmanager
def _allocation_lock() -> Iterator[None]:
    """Serialise control-subnet allocation between processes (the root routing table is shared)."""
    directory = Path("/run/lock") if Path("/run/lock").is_dir() else Path(tempfile.gettempdir())
    with open(directory / "coinfer-netns.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def kernel_shaping_unavailable() -> str | None:
    """None when namespaces, veth and tc tbf work here, else a one-line reason why not.

    Tries for real: creates a namespace holding a veth pair with a tbf qdisc, then removes it.
    """
    if not Path("/proc/self/ns/net").exists():
        return "no Linux network namespaces on this system"
    if os.geteuid() != 0:
        return "not running as root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not on PATH; install iproute2"
    namespace = f"coinfer-{os.getpid()}-{secrets.token_hex(2)}-probe"
    try:
        _run(["ip", "netns", "add", namespace])
        _run(["ip", "-n", namespace, "link", "add", "pa", "type", "veth", "peer", "name", "pb"])
        _run(_tbf_command(namespace, "pa", 1e6))
    except LinkShapingError as exc:
        return str(exc)
    finally:
        try:
            _run(["ip", "netns", "delete", namespace], missing_ok=True)
        except LinkShapingError as exc:
            log.warning("could not remove probe namespace %s: %s", namespace, exc)
    return None


def _delete_namespace(namespace: str) -> None:
    """Delete a namespace; if processes still run in it, delete its interfaces first.

    A namespace outlives `ip netns delete` while a process is inside, and so would its veths.
    """
    pids = _run(["ip", "netns", "pids", namespace], missing_ok=True).split()
    if pids:
        log.warning("processes %s still run in namespace %s; it lingers (unnamed, without links) until they "
                    "exit", " ".join(pids), namespace)
        for line in _run(["ip", "-n", namespace, "-o", "link", "show"], missing_ok=True).splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name != "lo":
                _run(["ip", "-n", namespace, "link", "delete", name], missing_ok=True)
    _run(["ip", "netns", "delete", namespace], missing_ok=True)


def remove_stale(prefix: str = "coinfer") -> list[str]:
    """Delete the namespaces and control veths that runs with this prefix left behind; return their names.

    A namespace is stale when the process whose pid its name carries is gone; a root control veth
    is stale when no namespace of its topology is listed. Live topologies are left alone.
    """
    _check_prefix(prefix)
    # Links first: a topology creates its namespaces before its control veths, so a veth seen here
    # whose namespaces are not listed afterwards is certainly orphaned.
    links = _list_root_links()
    removed: list[str] = []
    live_tags: set[str] = set()
    for namespace in _list_namespaces():
        match = _namespace_pattern(prefix).fullmatch(namespace)
        if match is None:
            continue
        if _pid_alive(int(match.group(1))):
            live_tags.add(match.group(2))
            continue
        _delete_namespace(namespace)
        removed.append(namespace)
    for link in links:
        match = _control_pattern(prefix).fullmatch(link)
        if match is not None and match.group(1) not in live_tags:
            _run(["ip", "link", "delete", link], missing_ok=True)
            removed.append(link)
    if removed:
        log.info("removed stale link-shaping leftovers: %s", " ".join(removed))
    return removed


class NetnsTopology:
    """Namespaces, veth pairs and tbf qdiscs for `devices`, made on enter and removed on exit.

    Every two devices are joined by one veth pair; a direction that `links` does not name is
    unshaped. Names carry `prefix`, this process's pid and a random tag, so topologies running
    side by side (parallel tests) never collide.
    """

    def __init__(self, devices: Sequence[str], links: Sequence[ShapedLink], prefix: str = "coinfer") -> None:
        _check_prefix(prefix)
        names = tuple(devices)
        if not names or len(set(names)) != len(names) or not all(names):
            raise UserInputError(f"devices must be distinct non-empty names, not {list(names)}")
        if len(names) > MAX_DEVICES:
            raise UserInputError(f"at most {MAX_DEVICES} devices fit the pair address range, not {len(names)}")
        self.devices = names
        self.prefix = prefix
        self._index = {device: i for i, device in enumerate(names)}
        self._rates: dict[tuple[int, int], float] = {}
        for link in links:
            ends = self._ends(link.source, link.target)
            if ends in self._rates:
                raise UserInputError(f"link {link.source}->{link.target} is given twice")
            if not math.isinf(link.bandwidth_bits_per_s):
                tbf_params(link.bandwidth_bits_per_s)  # validates before anything is made
            self._rates[ends] = link.bandwidth_bits_per_s
        self._pairs = {pair: k for k, pair in enumerate(itertools.combinations(range(len(names)), 2))}
        self._namespaces: tuple[str, ...] = ()
        self._control_links: tuple[str, ...] = ()
        self._control_subnets: list[IPv4Network] = []
        # What exists now, so that removal (after a failed enter too) deletes exactly that.
        self._made_namespaces: list[str] = []
        self._made_controls: list[str] = []
        self._running = False

    def __enter__(self) -> NetnsTopology:
        if self._running:
            raise LinkShapingError("this topology is already running; enter it once")
        started = time.perf_counter()
        with _allocation_lock():
            try:
                self._name()
                self._create()
            except BaseException as exc:
                for problem in self._remove():
                    log.error("while undoing a failed topology: %s", problem)
                if isinstance(exc, LinkShapingError):
                    raise LinkShapingError(f"could not build the link-shaping topology: {exc} "
                                           f"(kernel_shaping_unavailable() says whether this machine can)") from exc
                raise
        self._running = True
        log.info("link-shaping topology up in %.0f ms: %s", (time.perf_counter() - started) * 1e3,
                 ", ".join(f"{d}={self.namespace(d)} ({self.control_address(d)})" for d in self.devices))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        problems = self._remove()
        if not problems:
            return
        message = (f"could not remove everything of link-shaping topology {self.prefix}: {'; '.join(problems)}; "
                   f"coinfer.runtime.netns.remove_stale() removes leftovers once this process has ended")
        if exc_type is not None:
            log.error("%s", message)  # the body's own exception says more; do not hide it
            return
        raise LinkShapingError(message)

    def namespace(self, device: str) -> str:
        """The name of `device`'s network namespace (for `ip netns exec`)."""
        return self._namespaces[self._live_index(device)]

    def exec_prefix(self, device: str) -> list[str]:
        """The argv prefix that runs a command inside `device`'s namespace."""
        return ["ip", "netns", "exec", self.namespace(device)]

    def address(self, source: str, target: str) -> str:
        """The IPv4 a process in `source`'s namespace connects to to reach `target` over their shaped pair.

        A device reaching itself uses loopback.
        """
        if source == target:
            self._live_index(source)
            return "127.0.0.1"
        i, j = self._ends(source, target)
        self._live_index(source)
        subnet = self._pair_subnet(i, j)
        return str(subnet[1] if j < i else subnet[2])

    def control_address(self, device: str) -> str:
        """The IPv4 by which the root namespace reaches `device`'s namespace, over an unshaped veth."""
        return str(self._control_subnets[self._live_index(device)][2])

    def root_address(self, device: str) -> str:
        """The IPv4 by which `device`'s namespace reaches the root namespace (the coordinator)."""
        return str(self._control_subnets[self._live_index(device)][1])

    def set_bandwidth(self, source: str, target: str, bits_per_s: float) -> None:
        """Change the live link source->target to `bits_per_s` (inf removes shaping); one tc call."""
        i, j = self._ends(source, target)
        self._live_index(source)
        namespace, interface = self._namespaces[i], f"p{j}"
        if math.isinf(bits_per_s) and bits_per_s > 0:
            if not math.isinf(self._rates.get((i, j), math.inf)):
                _run(["tc", "-n", namespace, "qdisc", "delete", "dev", interface, "root"], missing_ok=True)
        else:
            _run(_tbf_command(namespace, interface, bits_per_s))
        self._rates[(i, j)] = bits_per_s

    def set_link_up(self, a: str, b: str, up: bool) -> None:
        """Take the veth pair joining `a` and `b` down (both directions stop carrying traffic, as a cut
        cable or a dead access point would) or bring it back up."""
        i, j = self._ends(a, b)
        self._live_index(a)
        state = "up" if up else "down"
        _run(["ip", "-n", self._namespaces[i], "link", "set", "dev", f"p{j}", state])
        _run(["ip", "-n", self._namespaces[j], "link", "set", "dev", f"p{i}", state])

    def _ends(self, source: str, target: str) -> tuple[int, int]:
        for device in (source, target):
            if device not in self._index:
                raise UserInputError(f"unknown device {device!r}; this topology has {', '.join(self.devices)}")
        if source == target:
            raise UserInputError(f"a link joins two different devices, not {source!r} to itself")
        return self._index[source], self._index[target]

    def _live_index(self, device: str) -> int:
        if device not in self._index:
            raise UserInputError(f"unknown device {device!r}; this topology has {', '.join(self.devices)}")
        if not self._running:
            raise LinkShapingError("the topology is not running; use it as `with NetnsTopology(...) as topology:`")
        return self._index[device]

    def _pair_subnet(self, i: int, j: int) -> IPv4Network:
        k = self._pairs[(min(i, j), max(i, j))]
        return IPv4Network((int(PAIR_NETWORK.network_address) + 4 * k, 30))

    def _name(self) -> None:
        """Pick a tag no live topology uses, and the names and control subnets that follow from it."""
        used = {m.group(1) for m in map(_control_pattern(self.prefix).fullmatch, _list_root_links()) if m}
        used |= {m.group(2) for m in map(_namespace_pattern(self.prefix).fullmatch, _list_namespaces()) if m}
        tag = secrets.token_hex(2)
        while tag in used:
            tag = secrets.token_hex(2)
        count = len(self.devices)
        self._namespaces = tuple(f"{self.prefix}-{os.getpid()}-{tag}-{i}" for i in range(count))
        self._control_links = tuple(f"{self.prefix}{tag}c{i}" for i in range(count))
        taken = _used_networks()
        free = (s for s in CONTROL_NETWORK.subnets(new_prefix=30) if not any(s.overlaps(t) for t in taken))
        self._control_subnets = list(itertools.islice(free, count))
        if len(self._control_subnets) < count:
            raise LinkShapingError(f"{CONTROL_NETWORK} has no {count} free /30 subnets left for control links; "
                                   f"remove_stale() frees those of crashed runs")

    def _create(self) -> None:
        for namespace in self._namespaces:
            self._made_namespaces.append(namespace)
            _run(["ip", "netns", "add", namespace])
            _run(["ip", "-n", namespace, "link", "set", "lo", "up"])
        for i, j in self._pairs:
            _run(["ip", "link", "add", f"p{j}", "netns", self._namespaces[i],
                  "type", "veth", "peer", "name", f"p{i}", "netns", self._namespaces[j]])
            subnet = self._pair_subnet(i, j)
            for here, there, address in ((i, j, subnet[1]), (j, i, subnet[2])):
                self._configure(self._namespaces[here], f"p{there}", address)
        for i, (namespace, link) in enumerate(zip(self._namespaces, self._control_links, strict=True)):
            self._made_controls.append(link)
            _run(["ip", "link", "add", link, "type", "veth", "peer", "name", "ctl", "netns", namespace])
            self._configure(None, link, self._control_subnets[i][1])
            self._configure(namespace, "ctl", self._control_subnets[i][2])
        for (i, j), bits_per_s in self._rates.items():
            if not math.isinf(bits_per_s):
                _run(_tbf_command(self._namespaces[i], f"p{j}", bits_per_s))

    @staticmethod
    def _configure(namespace: str | None, interface: str, address: IPv4Address) -> None:
        ip = ["ip"] if namespace is None else ["ip", "-n", namespace]
        _run([*ip, "addr", "add", f"{address}/30", "dev", interface])
        _run([*ip, "link", "set", interface, "up"])

    def _remove(self) -> list[str]:
        """Delete what exists (control veths explicitly, then namespaces); return what could not be deleted."""
        self._running = False
        problems: list[str] = []
        # The root ends are deleted here, at once: with a namespace they would go only asynchronously.
        # Pair veths go with their namespaces (_delete_namespace deletes them first where processes linger).
        while self._made_controls:
            try:
                _run(["ip", "link", "delete", self._made_controls.pop()], missing_ok=True)
            except LinkShapingError as exc:
                problems.append(str(exc))
        while self._made_namespaces:
            try:
                _delete_namespace(self._made_namespaces.pop())
            except LinkShapingError as exc:
                problems.append(str(exc))
        return problems
