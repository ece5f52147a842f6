"""Running plans for real: workers, the wire between them, and the client that deploys to them.

The only package that opens sockets or starts processes. In processing order:

    program.py      the ops and values a stage executes (torch-free), and its JSON index
    routing.py      a Plan -> per-device stages, who sends which value to whom (pure)
    aten_calls.py   one aten call as JSON and back: the form a stage's program travels in
    blobs.py        weight blobs: safetensors bytes named by their sha256
    packaging/      the client's side: a model -> what each device is sent (calls, sub-models, blobs)
    wire.py         frames on the wire: a small binary header plus raw bytes, every field checked
    security.py     CURVE key pairs, the ZAP gate, secure sockets
    codec.py        per-link encodings of tensors (fp16, int8, lz4, zstd)
    links.py        a worker's sender thread to one peer: encode, emulate the link, send
    serving.py      a device's per-request bookkeeping: arrivals, stages to run, values to send (pure)
    stages.py       the interface of the stage runners: torch_stages.py (aten calls), onnx_stages.py
    worker/         the long-running worker (`coinfer worker`): I/O, preparer and compute threads
    client.py       the client: control calls, weight streaming, requests, results
    deploy.py       deploying a plan: health, deploy, blobs, activate, on every worker
    run.py          run_plan: deploy, serve, verify (verify.py), report measured beside predicted
    batching.py     micro-batching: packing K requests into one batch, the plan and its times at batch K
    adaptive.py     serving while a policy re-partitions live (`coinfer adapt`)
    local.py        starting and stopping the workers a plan needs on this machine, with keys
    netns.py        kernel link emulation: network namespaces, veth pairs and tc
    reference.py    the unpartitioned model on the client: example inputs and outputs to compare with
    hop.py          the per-hop transport benchmark (`coinfer bench hop`)
"""
