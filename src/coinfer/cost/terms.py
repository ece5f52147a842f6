"""The cost equations, one function each (REFERENCE section 1: the survey's unified model).

Everything else in coinfer that needs one of these numbers calls these functions, so each
equation lives in exactly one place.
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np

from coinfer.cluster import BackgroundLoad, Device, Link
from coinfer.graph import Graph, Node

Figure = TypeVar("Figure", float, np.ndarray)  # one request's figure, or many candidates' at once

JOULES_PER_KWH = 3.6e6


def compute_time_s(flops: float, flops_per_s: float) -> float:
    """L_c = F / com: the survey's compute time when no profile gives the node's time."""
    return flops / flops_per_s


def transfer_time_s(link: Link | None, size_bytes: float, codec_s: float = 0.0) -> float:
    """One message over one hop: latency + per-message overhead (the link's and the runtime's) +
    size / bandwidth + codec time.

    `size_bytes` is what goes on the wire (after the link's codec, if any) and `codec_s` the
    codec's encode + decode time (`coinfer.codec_model.codec_time_s`; 0 without a codec). No link
    means the devices cannot talk: the time is infinite so that solvers avoid the placement by
    arithmetic instead of special cases.
    """
    if link is None:
        return math.inf
    return link.latency_s + link.overhead_s + link.runtime_s + size_bytes / link.bytes_per_s + codec_s


def queueing_time_s(load: BackgroundLoad | None) -> float:
    """Time in system at a loaded device, as the survey's examples count it.

    M/M/1: 1 / (mu - lambda). M/D/1: the waiting time rho / (2 mu (1 - rho)) plus the service
    time 1 / mu. An unstable queue (lambda >= mu) is an infinite time, not an error.
    """
    if load is None:
        return 0.0
    lam, mu = load.arrival_rate_per_s, load.service_rate_per_s
    if lam >= mu:
        return math.inf
    if load.model == "mm1":
        return 1.0 / (mu - lam)
    rho = lam / mu
    return rho / (2.0 * mu * (1.0 - rho)) + 1.0 / mu


def compute_energy_j(device: Device, busy_s: float) -> float:
    """E_c = a_i * L_c; under DVFS a_i = kappa f^3, which makes E = kappa f^2 C for C cycles."""
    return device.busy_power_w * busy_s


def waiting_energy_j(origin: Device, latency_s: Figure, busy_s: Figure) -> Figure:
    """What the origin draws while it waits for its answer: idle power times the request's time
    not spent computing on it.

    The origin holds the request from input to result (a camera, a phone; the adaptive paper's Pi,
    which draws a fixed 12 W whatever it does, REFERENCE section 4). While its own radio sends it
    draws idle power plus the link's transmit power, so only compute time is taken out. Servers
    spend their waiting time on other requests, so it is not charged to this one. Takes floats, or
    arrays of candidates (`adapt.policies.reap_model`), and returns the same.
    """
    if origin.idle_power_w == 0.0:
        return busy_s * 0.0  # zeros of the input's shape; latency may be inf, and 0 W * inf s is nan
    return origin.idle_power_w * np.maximum(latency_s - busy_s, 0.0)  # type: ignore[no-any-return]


def transmit_energy_j(link: Link | None, transfer_s: float) -> float:
    """E_t = beta * L_t, charged to the sending device."""
    if link is None or transfer_s == 0.0:
        return 0.0
    return link.power_w * transfer_s


def device_cost_usd(device: Device, busy_s: float, energy_j: float) -> float:
    """gamma_i * L_c plus the device's electricity, priced per kWh."""
    return device.price_usd_per_s * busy_s + device.electricity_usd_per_kwh * energy_j / JOULES_PER_KWH


def link_cost_usd(link: Link | None, transfer_s: float, size_bytes: float) -> float:
    """delta * L_t for a per-second price, or a per-byte price times the bytes sent."""
    if link is None or size_bytes == 0:
        return 0.0
    return link.price_usd_per_s * transfer_s + link.price_usd_per_byte * size_bytes


def effective_busy_s(device: Device, busy_s: float) -> float:
    """Time per request a device needs when a fraction rho of it already serves background work."""
    if device.background is None:
        return busy_s
    free = 1.0 - device.background.utilisation
    return busy_s / free if free > 0 else math.inf


def is_convolution(op: str) -> bool:
    """A convolution node: aten.conv1d/2d/3d, aten.convolution, aten.conv_transpose2d, ONNX Conv."""
    name = op.removeprefix("aten.").lstrip("_").lower()
    return name.startswith("conv") and not name.startswith("convert")


def working_set_bytes(graph: Graph, node: Node) -> int:
    """The memory a node needs while it runs, beside the weights its device holds anyway.

    Its inputs and its output, as every framework holds them. A convolution holds two more
    buffers in PyTorch's CPU path (oneDNN): its output written in the kernel's blocked layout
    before the reorder into the tensor's, and its weights reordered into that layout on every
    call. Measured per op with the worker's stage runner (benchmarks/worker_memory.py, docs/
    runtime.md): VGG16's 224x224 conv 64->64 peaked at 38.5 MB for 12.8 + 12.8 MB of input and
    output (the third buffer), resnet50's 3x3 512->512 conv at 7x7 at 10.6 MB for 0.2 MB of
    tensors and 9.4 MB of weights (the fourth).
    """
    tensors = node.output_bytes + sum(graph.tensor_bytes(src) for src in dict.fromkeys(node.inputs))
    if is_convolution(node.op):
        return tensors + node.output_bytes + node.param_bytes
    return tensors
