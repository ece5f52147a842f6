"""How closely kernel link shaping (namespaces + veth + tbf) holds a TCP transfer to the set rate.

For each rate, a 5 MB transfer from one namespace to another over the shaped pair, median of 3:
payload throughput and its ratio to the set rate. TCP payload is at most 1448 of the 1514 bytes
tbf counts per full frame (IP, TCP with timestamps, Ethernet headers), so ~0.956 is exact shaping.
Then the latency of `set_bandwidth` (one `tc qdisc replace`), median of 50, and of building and
removing a two-device topology. Needs root and iproute2.

    .venv/bin/python benchmarks/netns_shaping_accuracy.py [--rates-mbit 1,5,20,100] [--size-mb 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time

from coinfer.runtime.netns import NetnsTopology, ShapedLink, kernel_shaping_unavailable

PAYLOAD_PER_FRAME = 1448 / 1514

SINK = """
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
"""
SEND = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2]))).sendall(bytes(int(sys.argv[3])))"


def transfer_bits_per_s(topology: NetnsTopology, size_bytes: int) -> float:
    """Payload bits per second of one TCP transfer a -> b, timed at the receiver from first to last byte."""
    sink = subprocess.Popen([*topology.exec_prefix("b"), sys.executable, "-c", SINK], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert sink.stdout is not None
        port = sink.stdout.readline().strip()
        subprocess.run([*topology.exec_prefix("a"), sys.executable, "-c", SEND, topology.address("a", "b"), port,
                        str(size_bytes)], check=True, timeout=600)
        received, seconds = sink.communicate(timeout=600)[0].split()
    finally:
        sink.kill()
        sink.wait()
    if int(received) != size_bytes:
        raise RuntimeError(f"sent {size_bytes} bytes, received {received}")
    return size_bytes * 8 / float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates-mbit", default="1,5,20,100")
    parser.add_argument("--size-mb", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    reason = kernel_shaping_unavailable()
    if reason is not None:
        sys.exit(f"kernel link shaping is unavailable here: {reason}")
    size_bytes = round(args.size_mb * 1e6)
    print(f"# {platform.node()} {platform.machine()} Linux {platform.release()}; "
          f"{args.size_mb:g} MB per transfer, median of {args.repeats}")
    print(f"{'rate Mbit/s':>12} {'measured Mbit/s':>16} {'ratio':>7} {'ratio / 0.956':>14}")
    with NetnsTopology(["a", "b"], [ShapedLink("a", "b", 1e6)]) as topology:
        for mbit in (float(r) for r in args.rates_mbit.split(",")):
            topology.set_bandwidth("a", "b", mbit * 1e6)
            measured = statistics.median(transfer_bits_per_s(topology, size_bytes) for _ in range(args.repeats))
            ratio = measured / (mbit * 1e6)
            print(f"{mbit:12g} {measured / 1e6:16.3f} {ratio:7.3f} {ratio / PAYLOAD_PER_FRAME:14.3f}")
        latencies_s = []
        for i in range(50):
            t0 = time.perf_counter()
            topology.set_bandwidth("a", "b", (20e6, 5e6)[i % 2])
            latencies_s.append(time.perf_counter() - t0)
    print(f"set_bandwidth latency: median {statistics.median(latencies_s) * 1e3:.1f} ms, "
          f"max {max(latencies_s) * 1e3:.1f} ms (50 calls)")
    setup_s, teardown_s = [], []
    for _ in range(5):
        t0 = time.perf_counter()
        with NetnsTopology(["a", "b"], [ShapedLink("a", "b", 20e6)]):
            t1 = time.perf_counter()
        setup_s.append(t1 - t0)
        teardown_s.append(time.perf_counter() - t1)
    print(f"two-device topology: build {statistics.median(setup_s) * 1e3:.0f} ms, "
          f"remove {statistics.median(teardown_s) * 1e3:.0f} ms (median of 5)")


if __name__ == "__main__":
    main()
