"""Running plans for real: workers, the wire between them, and the coordinator that drives them.

The only package that opens sockets or starts processes. In processing order:

    program.py    the ops and values a stage executes (torch-free view of a program)
    routing.py    a Plan -> per-device stages, who sends which value to whom (pure)
    wire.py       frames on the wire: a small binary header plus raw tensor bytes, no pickle
    codec.py      per-link encodings of tensors (fp16, int8, lz4, zstd)
    shaping.py    in-process link emulation: bandwidth (constant or a trace), delay, overhead
    netns.py      kernel link emulation: network namespaces, veth pairs and tc
    executor.py   running a stage's ops in PyTorch or onnxruntime
    batching.py   micro-batching: packing K requests into one batch, the plan and its times at batch K
    worker.py     the long-running worker process (`coinfer worker`)
    client.py     deploying a plan to workers, sending requests, collecting results and stats
    local.py      starting and stopping the workers a plan needs on this machine
    hop.py        the per-hop transport benchmark (`coinfer bench hop`)
"""
