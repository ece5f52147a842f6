"""Every error coinfer raises on purpose, in one tree.

Each class subclasses the nearest builtin so callers can catch either. Messages say what was
expected, what came, and what to do; the CLI prints them without a traceback and exits with the
class's `exit_code` (0 is success): 1 a request failed or no plan is feasible, 2 a mistake in the
input, 3 a worker or the network could not be reached.

    CoinferError
    ├── UserInputError (ValueError)        something a user wrote is wrong
    │   ├── ModelSpecError                 unknown or malformed MODEL spec string
    │   ├── GraphFileError                 a graph JSON file that does not validate
    │   ├── ClusterFileError               a cluster YAML file (or preset name) that does not validate
    │   ├── PlanError                      a placement that is incomplete or names unknown nodes/devices
    │   ├── ProfileError                   a profile that does not fit the graph or cannot be read
    │   ├── ObjectiveError                 an objective or constraint that cannot be parsed
    │   ├── CodecError                     a link codec that cannot be parsed (forms: none, fp16+lz4, int8+zstd)
    │   ├── WeightsError                   a state-dict file that cannot be read or does not fit the model
    │   └── KeyFileError                   a CURVE key file or directory that cannot be read
    ├── CaptureError (RuntimeError)        a model construct that the capture cannot turn into a graph
    ├── InfeasibleError (RuntimeError)     no plan meets the constraints; names the constraint and the gap
    ├── LinkShapingError (RuntimeError)    a namespace, veth or tc command of kernel link shaping failed
    ├── WireError (ValueError)             a malformed, oversized or unexpected message on the runtime's wire
    ├── WorkerError (RuntimeError)         a worker refused a deployment, or a stage raised (exit 1)
    │   └── UnreachableError               a worker did not answer: down, wrong address, or wrong keys (exit 3)
    └── MissingDependencyError (ImportError)  an optional extra (torch, transformers, onnx) is not installed
"""

from __future__ import annotations


class CoinferError(Exception):
    """Base of every error coinfer raises on purpose."""

    exit_code = 2  # what `coinfer` exits with when this error ends a command


class UserInputError(CoinferError, ValueError):
    """Something the user wrote (a file, a flag, a spec) is wrong; the message says how to fix it."""


class ModelSpecError(UserInputError):
    """A MODEL spec string that names no known source or model."""


class GraphFileError(UserInputError):
    """A graph JSON document that does not validate."""


class ClusterFileError(UserInputError):
    """A cluster YAML document (or preset name) that does not validate."""


class PlanError(UserInputError):
    """A placement that leaves nodes unplaced or names unknown nodes or devices."""


class ProfileError(UserInputError):
    """A profile that cannot be read or does not fit the graph it is used with."""


class ObjectiveError(UserInputError):
    """An objective or constraint expression that cannot be parsed."""


class CodecError(UserInputError):
    """A link codec that cannot be parsed; the message lists the valid forms."""


class WeightsError(UserInputError):
    """A state-dict file (safetensors, or a .pt read weights-only) that cannot be read or does not fit the model."""


class KeyFileError(UserInputError):
    """A CURVE key file or key directory that is missing, unreadable or malformed."""


class CaptureError(CoinferError, RuntimeError):
    """A model construct that cannot be captured; the message names it and a workaround."""


class InfeasibleError(CoinferError, RuntimeError):
    """No plan meets the constraints; the message names the constraint and by how much it fails."""

    exit_code = 1


class WireError(CoinferError, ValueError):
    """A message on the runtime's wire that is malformed, too large, or not what the receiver expects."""


class WorkerError(CoinferError, RuntimeError):
    """A worker that refuses a deployment, or whose stage raised; names the worker and node."""

    exit_code = 1


class UnreachableError(WorkerError):
    """A worker that does not answer within its timeout; names the worker and its address."""

    exit_code = 3

    def __init__(self, message: str, device: str | None = None) -> None:
        super().__init__(message)
        self.device = device  # the device whose worker did not answer, when one is to blame


class LinkShapingError(CoinferError, RuntimeError):
    """Kernel link shaping (network namespaces, veth pairs, tc) failed; names the command and its stderr."""

    exit_code = 3


class MissingDependencyError(CoinferError, ImportError):
    """An optional dependency is needed for this feature; the message names the extra to install."""
