"""Node times for every device of a cluster: the step between profiles and a Problem.

For each device, in this order of preference:
1. a profile given for that device name (measured on it, or predicted and saved);
2. its catalogued hardware: what it sustains under its `framework` (coinfer.profile.sustained,
   fitted to published latencies; peak-only where nothing is published), else the roofline of its
   datasheet peaks, calibrated when a calibration of this machine is available;
3. the survey's compute model, FLOPs / `flops_per_s`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from coinfer.cluster import Cluster, Device
from coinfer.cost.terms import compute_time_s
from coinfer.errors import ProfileError
from coinfer.files.graph_file import graph_digest
from coinfer.graph import Graph
from coinfer.profile.timings import Profile

if TYPE_CHECKING:
    from coinfer.profile.analytic import Calibration


def resolve_times(
    graph: Graph,
    cluster: Cluster,
    profiles: Mapping[str, Profile] | None = None,
    calibration: Calibration | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """(device -> node -> seconds, device -> where those times came from)."""
    profiles = profiles or {}
    unknown = sorted(set(profiles) - set(cluster.device_names))
    if unknown:
        raise ProfileError(f"profiles given for {unknown}, which the cluster does not have; "
                           f"devices: {', '.join(cluster.device_names)}")
    digest = graph_digest(graph)
    times: dict[str, dict[str, float]] = {}
    sources: dict[str, str] = {}
    for device in cluster.devices:
        given = profiles.get(device.name)
        if given is not None:
            if given.graph_digest != digest:
                raise ProfileError(
                    f"the profile for {device.name} was made for another graph ({given.graph_name}, digest "
                    f"{given.graph_digest}); profile this graph (digest {digest}) instead"
                )
            times[device.name] = dict(given.node_time_s)
            sources[device.name] = f"{given.method}:{given.device}"
        else:
            times[device.name], sources[device.name] = _predicted(graph, device, calibration)
    return times, sources


def _predicted(graph: Graph, device: Device, calibration: Calibration | None) -> tuple[dict[str, float], str]:
    if device.time_model == "roofline" and device.catalog is not None and device.framework is not None:
        from coinfer.profile.catalog import device_spec
        from coinfer.profile.sustained import predict_sustained, sustained_fit

        fit = sustained_fit(device.catalog, device.framework)
        profile = predict_sustained(graph, device_spec(device.catalog), fit)
        if fit is None:
            return dict(profile.node_time_s), (f"roofline:{device.catalog} (peak-only, uncalibrated: nothing "
                                               f"published for {device.framework})")
        return dict(profile.node_time_s), (f"sustained:{device.catalog} ({device.framework}, fitted on "
                                           f"{len(fit.fitted_on)} published models)")
    if device.time_model == "roofline" and device.catalog is not None:
        from coinfer.profile.analytic import predict
        from coinfer.profile.catalog import device_spec

        profile = predict(graph, device_spec(device.catalog), calibration)
        tag = (f"calibrated on {', '.join(calibration.fitted_on)} here" if calibration is not None
               else "peak-only, uncalibrated; give it a framework for its sustained speed")
        return dict(profile.node_time_s), f"roofline:{device.catalog} ({tag})"
    return ({n.id: compute_time_s(n.flops, device.flops_per_s) for n in graph.nodes},
            f"flops: {device.flops_per_s:.3g} FLOP/s")
