"""Node times for every device of a cluster: the step between profiles and a Problem.

For each device, in this order of preference:
1. a profile given for that device name (measured on it, or predicted and saved);
2. its catalogued hardware: what it sustains under its `framework` (pytorch unless the cluster
   says otherwise; coinfer.profile.sustained, fitted to published latencies, or transferred from a
   device with the same cores); where there is no fit, or the cluster asks for `framework: peak`,
   the roofline of its datasheet peaks, with efficiencies calibrated on this machine when such a
   calibration is given (the demo), else peak-only and said to be uncalibrated;
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
            times[device.name], sources[device.name] = predict_device(graph, device, calibration)
    return times, sources


def predict_device(graph: Graph, device: Device, calibration: Calibration | None = None
                   ) -> tuple[dict[str, float], str]:
    """Node times of `graph` on a device with no profile given (step 2 or 3 of the module docstring)."""
    if device.time_model == "roofline" and device.catalog is not None:
        from coinfer.profile.analytic import predict
        from coinfer.profile.catalog import device_spec
        from coinfer.profile.sustained import FRAMEWORKS, predict_sustained, sustained_fit

        spec = device_spec(device.catalog)
        framework = device.framework or "pytorch"  # what coinfer's workers run, as a cluster file defaults to
        fit = sustained_fit(spec.name, framework) if framework in FRAMEWORKS else None
        if fit is not None:
            return dict(predict_sustained(graph, spec, fit).node_time_s), f"sustained:{spec.name} ({fit.describe()})"
        why = f"nothing published for {framework}" if framework in FRAMEWORKS else "datasheet peaks asked for"
        tag = (f"{why}; efficiencies calibrated on {', '.join(calibration.fitted_on)} here" if calibration is not None
               else f"peak-only, uncalibrated: {why}")
        return dict(predict(graph, spec, calibration).node_time_s), f"roofline:{spec.name} ({tag})"
    return ({n.id: compute_time_s(n.flops, device.flops_per_s) for n in graph.nodes},
            f"flops: {device.flops_per_s:.3g} FLOP/s")
