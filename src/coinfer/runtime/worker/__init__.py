"""The worker: a long-running process that holds stages and serves requests (`coinfer worker`).

One job a module, in the order a deployment and a request meet them:

    config.py      WorkerConfig: addresses, limits, cache, memory, keys
    deployment.py  a deploy message, checked, then built into a Deployment once its blobs are here
    server.py      the I/O thread: the control and data sockets, checks, dispatch
    control.py     the control ops, one handler each
    preparing.py   the preparer thread: deploy, blob chunks, activate (memory checked first)
    blob_cache.py  blobs on disk by sha256, verified as they arrive
    resident.py    the weights in memory, shared by the deployments that hold them
    compute.py     the compute thread: request state, stages, emulation, statistics
    outgoing.py    the sender threads, one per peer and one to the client
    memory.py      what the machine has and what a process holds (/proc)

Receiving, preparing, computing and sending run in their own threads, so they overlap
(pipelining) and health and cancel are answered however busy the others are. A deployment is
identified by its plan version, so several can be held at once and a request runs entirely
under the version it started with. Nothing a peer sends can stop the worker: a malformed frame,
a wrong tensor, an unknown version or a failing stage becomes an error message to the client
(and a log line), and serving goes on.
"""

from coinfer.runtime.worker.config import WorkerConfig
from coinfer.runtime.worker.control import PROBE
from coinfer.runtime.worker.server import Worker

__all__ = ["PROBE", "Worker", "WorkerConfig"]
