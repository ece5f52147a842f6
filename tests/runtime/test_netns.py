"""Kernel link shaping for real: namespaces, veth pairs and tbf, measured with TCP transfers.

Needs root and iproute2; skipped (with the reason) where namespaces cannot be made. The rate
assertions use a wide band (25%): they check that shaping happens, not how fast this machine is.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest

from coinfer.errors import LinkShapingError, UserInputError
from coinfer.runtime import netns
from coinfer.runtime.netns import NetnsTopology, ShapedLink, kernel_shaping_unavailable, remove_stale, tbf_params

_UNAVAILABLE = kernel_shaping_unavailable()
pytestmark = pytest.mark.skipif(_UNAVAILABLE is not None, reason=f"kernel link shaping unavailable: {_UNAVAILABLE}")

PREFIX = "cftest"
TIMEOUT_S = 30.0

# Receives one connection to EOF; prints its port first, then bytes and seconds from first to last byte.
SINK = textwrap.dedent("""
    import socket, time
    server = socket.socket()
    server.bind(("0.0.0.0", 0))
    server.listen(1)
    print(server.getsockname()[1], flush=True)
    conn, _ = server.accept()
    total, first = 0, None
    while chunk := conn.recv(1 << 20):
        first = first or time.perf_counter()
        total += len(chunk)
    print(total, time.perf_counter() - first, flush=True)
""")
SEND = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2]))).sendall(bytes(int(sys.argv[3])))"


def throughput_bits_per_s(topology: NetnsTopology, source: str, target: str, size_bytes: int) -> float:
    """Payload bits per second of one TCP transfer from `source`'s namespace to `target` over their pair."""
    sink = subprocess.Popen([*topology.exec_prefix(target), sys.executable, "-c", SINK],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout is not None
        port = sink.stdout.readline().strip()
        subprocess.run([*topology.exec_prefix(source), sys.executable, "-c", SEND,
                        topology.address(source, target), port, str(size_bytes)], check=True, timeout=TIMEOUT_S)
        received, seconds = sink.communicate(timeout=TIMEOUT_S)[0].split()
    finally:
        sink.kill()
        sink.wait()
    assert int(received) == size_bytes
    return size_bytes * 8 / float(seconds)


def leftovers(namespace: str) -> list[str]:
    """Namespaces and root links that still carry this topology's tag (from one of its namespace names)."""
    _, _pid, tag, _index = namespace.rsplit("-", 3)
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.split()
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return [n for n in names if f"-{tag}-" in n] + [line for line in links.splitlines() if f"{PREFIX}{tag}c" in line]


def test_shaped_direction_holds_its_rate_and_the_other_is_free() -> None:
    with NetnsTopology(["a", "b"], [ShapedLink("a", "b", 20e6), ShapedLink("b", "a", math.inf)],
                       prefix=PREFIX) as topology:
        forward = throughput_bits_per_s(topology, "a", "b", 2_500_000)
        reverse = throughput_bits_per_s(topology, "b", "a", 2_500_000)
    # TCP payload is ~95% of what tbf counts (IP, TCP and Ethernet headers), well inside the band.
    assert forward == pytest.approx(20e6, rel=0.25)
    assert reverse > 5 * forward


def test_set_bandwidth_changes_the_measured_rate() -> None:
    with NetnsTopology(["a", "b"], [ShapedLink("a", "b", 20e6)], prefix=PREFIX) as topology:
        before = throughput_bits_per_s(topology, "a", "b", 1_000_000)
        topology.set_bandwidth("a", "b", 5e6)
        after = throughput_bits_per_s(topology, "a", "b", 1_000_000)
        topology.set_bandwidth("a", "b", math.inf)
        unshaped = throughput_bits_per_s(topology, "a", "b", 1_000_000)
    assert before == pytest.approx(20e6, rel=0.25)
    assert after == pytest.approx(5e6, rel=0.25)
    assert unshaped > 5 * before


def test_root_reaches_every_device_and_every_device_reaches_root() -> None:
    with NetnsTopology(["a", "b", "c"], [], prefix=PREFIX) as topology:
        for device in topology.devices:
            # root -> device: connect to a listener inside the namespace.
            sink = subprocess.Popen([*topology.exec_prefix(device), sys.executable, "-c", SINK],
                                    stdout=subprocess.PIPE, text=True)
            try:
                assert sink.stdout is not None
                port = int(sink.stdout.readline())
                with socket.create_connection((topology.control_address(device), port), timeout=5) as conn:
                    conn.sendall(b"hello")
                assert sink.communicate(timeout=TIMEOUT_S)[0].split()[0] == "5"
            finally:
                sink.kill()
                sink.wait()
            # device -> root: connect from inside the namespace to a listener here.
            with socket.create_server((topology.root_address(device), 0)) as server:
                connect = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)"
                subprocess.run([*topology.exec_prefix(device), sys.executable, "-c", connect,
                                topology.root_address(device), str(server.getsockname()[1])],
                               check=True, timeout=TIMEOUT_S)
                server.settimeout(5)
                server.accept()[0].close()


def test_exit_removes_everything_also_when_the_body_raised() -> None:
    with NetnsTopology(["a", "b"], [ShapedLink("a", "b", 1e6)], prefix=PREFIX) as topology:
        first = topology.namespace("a")
        assert leftovers(first)
    assert leftovers(first) == []
    topology.__exit__(None, None, None)  # idempotent

    with pytest.raises(ZeroDivisionError), NetnsTopology(["a", "b", "c"], [], prefix=PREFIX) as topology:
        second = topology.namespace("c")
        1 / 0  # noqa: B018
    assert leftovers(second) == []


def test_exit_removes_links_even_while_a_process_lingers_in_a_namespace() -> None:
    with NetnsTopology(["a", "b"], [ShapedLink("a", "b", 1e6)], prefix=PREFIX) as topology:
        name = topology.namespace("b")
        lingering = subprocess.Popen([*topology.exec_prefix("b"), "sleep", "60"])
    try:
        assert leftovers(name) == []
        if shutil.which("nsenter") is None:
            pytest.skip("nsenter (util-linux) is needed to look inside the lingering namespace")
        # The namespace outlives `ip netns delete` while the process runs; it keeps no veth, only loopback.
        links = subprocess.run(["nsenter", f"--net=/proc/{lingering.pid}/ns/net", "ip", "-o", "link", "show"],
                               capture_output=True, text=True, check=True).stdout
        assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]
    finally:
        lingering.kill()
        lingering.wait()


def test_a_failed_enter_removes_what_it_made_and_names_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(namespace: str, interface: str, bits_per_s: float) -> list[str]:
        return ["tc", "-n", namespace, "qdisc", "add", "dev", "nonexistent0", "root", "tbf", "rate", "1mbit",
                "burst", "3028", "limit", "50000"]

    monkeypatch.setattr(netns, "_tbf_command", broken)
    with pytest.raises(LinkShapingError, match="nonexistent0"):
        NetnsTopology(["a", "b"], [ShapedLink("a", "b", 1e6)], prefix=PREFIX).__enter__()
    ours = f"{PREFIX}-{os.getpid()}-"
    assert not [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                          check=True).stdout.split() if n.startswith(ours)]


def test_remove_stale_removes_a_crashed_run_and_spares_live_ones() -> None:
    crash = textwrap.dedent(f"""
        import os
        from coinfer.runtime.netns import NetnsTopology, ShapedLink
        topology = NetnsTopology(["a", "b"], [ShapedLink("a", "b", 1e6)], prefix={PREFIX!r}).__enter__()
        print(topology.namespace("a"), flush=True)
        os._exit(0)  # a crash: no __exit__
    """)
    crashed = subprocess.run([sys.executable, "-c", crash], capture_output=True, text=True, check=True,
                             timeout=TIMEOUT_S).stdout.strip()
    assert len(leftovers(crashed)) == 4  # two namespaces, two control veths
    with NetnsTopology(["a"], [], prefix=PREFIX) as live:
        removed = remove_stale(PREFIX)
        assert leftovers(live.namespace("a"))
    assert leftovers(crashed) == []
    assert crashed in removed
    assert len(removed) == 4


def test_names_fit_interface_limits_and_mistakes_are_reported() -> None:
    assert tbf_params(1e6).burst_bytes >= 1514  # a bucket smaller than a frame drops every packet
    assert tbf_params(1e9).burst_bytes == 250_000  # 2 ms at 1 Gbit/s
    topology = NetnsTopology(["a", "b"], [ShapedLink("a", "b", 1e6)], prefix=PREFIX)
    with pytest.raises(LinkShapingError, match="not running"):
        topology.address("a", "b")
    with pytest.raises(UserInputError, match="unknown device"):
        NetnsTopology(["a", "b"], [ShapedLink("a", "z", 1e6)])
    with pytest.raises(UserInputError, match="prefix"):
        NetnsTopology(["a"], [], prefix="much-too-long")
    with pytest.raises(UserInputError, match="non-negative"):
        NetnsTopology(["a", "b"], [ShapedLink("a", "b", -1.0)])
    with NetnsTopology([f"device{i}" for i in range(12)], [], prefix="coinfer") as many:
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
        tag = many.namespace("device0").split("-")[2]
        assert sum(f"coinfer{tag}c" in line for line in links.splitlines()) == 12
        assert many.address("device3", "device11") != many.address("device11", "device3")
