"""The two step programs of one generation, captured, and one plan that places both.

Generation with a KV cache runs two programs of the same model (coinfer.capture.causal_lm):
*prefill* over the prompt's N tokens and *decode* over one token, both with a cache of `context`
positions (N plus the new tokens, unless a longer context is asked for). Their graphs have the same
nodes (same ids, same edges; checked, not assumed), so one placement places both: a device runs the
same layers in both, and the KV cache its prefill writes is the one its decode steps read.

Plans are made on the decode graph, at block granularity: a transformer layer is one node, and so
are the ops before the first layer (`positions`: the causal mask, position ids and rotary tables,
which every layer reads; `embed`: the token and position embeddings) and after the last (`head`:
the final norm, the LM head, the argmax). Decode runs
once per new token, so it dominates a long generation; `prefill_plan` carries the same placement
over to the prefill graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from coinfer.errors import InfeasibleError, UserInputError
from coinfer.graph import Graph, coarsen_to_blocks
from coinfer.plan import Plan
from coinfer.problem import Problem

STEP_INPUTS = ("input_ids", "cache_position")  # the graph inputs of a step program


@dataclass(frozen=True)
class StepGraphs:
    """A causal LM's prefill and decode graphs at one prompt length and context."""

    spec: str
    prefill: Graph
    decode: Graph
    prompt_tokens: int
    context: int
    seed: int = 0
    layers: int | None = None
    weights: str | None = None
    state_bytes: Mapping[str, int] = field(default_factory=dict)  # node -> one session's KV cache bytes
    sessions: int = 1  # the sessions the graphs' memory holds the KV cache of

    def for_sessions(self, sessions: int) -> StepGraphs:
        """These step graphs with the KV cache of `sessions` sessions in each node's memory
        (`param_bytes`), what the memory constraint then holds; what a step reads stays one session's
        (`param_read_bytes`), so every time is unchanged."""
        if sessions < 1:
            raise UserInputError(f"give at least one session, not {sessions}")
        extra = sessions - self.sessions

        def held(graph: Graph) -> Graph:
            nodes = tuple(replace(n, param_bytes=n.param_bytes + extra * self.state_bytes[n.id],
                                  param_read_bytes=n.weight_bytes_read) if self.state_bytes.get(n.id) else n
                          for n in graph.nodes)
            return replace(graph, nodes=nodes)

        if extra == 0:
            return self
        return replace(self, prefill=held(self.prefill), decode=held(self.decode), sessions=sessions)

    @property
    def config(self) -> Any:
        """The Hugging Face config the model is built from (vocabulary, end-of-sequence token)."""
        from coinfer.capture.hf import hf_config
        from coinfer.capture.spec import parse_spec

        return hf_config(parse_spec(self.spec).target, self.layers, use_cache=True)

    @property
    def vocab_size(self) -> int:
        return int(self.config.vocab_size)

    @property
    def max_new_tokens(self) -> int:
        """The most tokens a session may generate: the context less the prompt, plus the token the
        last step predicts (it is never fed back, so it needs no cache position)."""
        return self.context - self.prompt_tokens + 1

    def prefill_plan(self, decode_plan: Plan) -> Plan:
        """The decode plan's placement (and codecs) over the prefill graph."""
        nodes = {n.id for n in self.decode.nodes}
        if decode_plan.graph.name != self.decode.name or set(decode_plan.placement) != nodes:
            raise UserInputError(f"the plan is not one of {self.spec}'s decode graph at context {self.context}; "
                                 "make it with coinfer generate --solver, or from StepGraphs.decode")
        return Plan(self.prefill, dict(decode_plan.placement), decode_plan.solver, codecs=dict(decode_plan.codecs))


def capture_steps(spec: str, prompt_tokens: int, max_new_tokens: int, *, context: int | None = None,
                  layers: int | None = None, seed: int = 0, weights: str | None = None,
                  granularity: str = "block", tensor_parallel: str | int | None = None) -> StepGraphs:
    """Both step graphs of `spec` for prompts of `prompt_tokens` tokens and up to `max_new_tokens` new
    ones. The context defaults to what they need; past the model's own context it is a clear error.
    `tensor_parallel` ("K" for every layer, "3:2,4-7:4" per layer) splits layers into K shards each
    (coinfer.capture.tensor_parallel) that a plan places apart."""
    from coinfer.capture.api import capture_step
    from coinfer.capture.causal_lm import context_limit
    from coinfer.capture.spec import parse_spec

    if prompt_tokens < 1 or max_new_tokens < 1:
        raise UserInputError(f"give at least one prompt token and one new token (got {prompt_tokens} and "
                             f"{max_new_tokens})")
    parsed = parse_spec(spec)
    if parsed.kind != "hf":
        raise UserInputError(f"coinfer generate runs hf: causal language models (hf:gpt2, hf:llama), not {spec}")
    needed = prompt_tokens + max_new_tokens - 1  # the last new token is predicted, never cached
    limit = context_limit(parsed.target, layers)
    if needed > limit:
        raise UserInputError(f"{spec} has a context of {limit} positions, and a prompt of {prompt_tokens} tokens "
                             f"with {max_new_tokens} new tokens needs {needed}: shorten the prompt or ask for "
                             f"at most {max(0, limit - prompt_tokens + 1)} new tokens")
    context = needed if context is None else context
    if context < needed:
        raise UserInputError(f"a context of {context} positions cannot hold a prompt of {prompt_tokens} tokens and "
                             f"{max_new_tokens} new tokens ({needed} positions)")
    if context > limit:
        raise UserInputError(f"{spec} has a context of {limit} positions; --context {context} is beyond it")
    if granularity not in ("block", "op"):
        raise UserInputError(f"granularity must be 'block' or 'op', not {granularity!r}")
    from coinfer.capture.causal_lm import canonical_tensor_parallel
    from coinfer.capture.tensor_parallel import mark_shard_groups

    split = canonical_tensor_parallel(None if tensor_parallel is None else str(tensor_parallel),
                                      int(_config(parsed.target, layers).num_hidden_layers))
    graphs: list[Graph] = []
    state: dict[str, int] = {}
    for tokens in (prompt_tokens, 1):
        graph, state = capture_step(spec, tokens, context, seed=seed, layers=layers, weights=weights,
                                    tensor_parallel=split)
        if granularity == "block":
            graph = with_end_blocks(graph)
            block = {n.id: n.block or n.id for n in graph.nodes}
            state = {b: sum(v for n, v in state.items() if block[n] == b) for b in set(block.values())}
            graph = mark_shard_groups(coarsen_to_blocks(graph))
        graphs.append(graph)
    prefill, decode = graphs
    _check_same_nodes(prefill, decode, spec)
    return StepGraphs(spec, prefill, decode, prompt_tokens, context, seed, layers, weights,
                      {n: b for n, b in state.items() if b})


def with_end_blocks(graph: Graph) -> Graph:
    """`graph` with the nodes before its first block in two blocks and those after its last in `head`:
    `positions`, the nodes that do not depend on the token ids (the causal mask, position ids, rotary
    tables: small, and read by every layer), and `embed`, those that do (the embeddings, whose output
    only the first layer reads). Kept apart, a cut sends every later device the few bytes of
    positions, not the hidden state too (the cost model prices a block's outputs as one value).

    `positions` holds the nodes that do not depend on the token ids and that a layer reads, directly
    or through other such nodes; the rest (GPT-2's position embedding, read only by the sum with the
    token embedding, too) is `embed`. Contracting them keeps the graph acyclic: a run of consecutive
    nodes of a topological order is convex, and no `embed` node feeds a `positions` one.
    Nodes between two blocks stay as they are."""
    order = [n.block is not None for n in graph.nodes]
    if not any(order):
        return graph
    first, last = order.index(True), len(order) - 1 - order[::-1].index(True)
    names = {b for b in (n.block for n in graph.nodes) if b}
    positions, embed, head = (_free_name(n, names) for n in ("positions", "embed", "head"))
    before = graph.nodes[:first]
    tokens = {STEP_INPUTS[0]}  # the token ids, and everything that depends on them
    for n in before:
        if tokens.intersection(n.inputs):
            tokens.add(n.id)
    readers: dict[str, set[str]] = {}
    for n in graph.nodes:
        for src in n.inputs:
            readers.setdefault(src, set()).add(n.id)
    ahead = {n.id for n in before}
    shared: set[str] = set()  # position nodes a layer reads, directly or through other such nodes
    for n in reversed(before):
        if n.id not in tokens and any(r not in ahead or r in shared for r in readers.get(n.id, ())):
            shared.add(n.id)
    nodes = tuple(replace(n, block=positions if n.id in shared else embed) if i < first and n.block is None else
                  replace(n, block=head) if i > last and n.block is None else n
                  for i, n in enumerate(graph.nodes))
    return replace(graph, nodes=nodes)


def _free_name(name: str, taken: set[str]) -> str:
    while name in taken:
        name = f"{name}_"
    return name


def _config(name: str, layers: int | None) -> Any:
    from coinfer.capture.hf import hf_config

    return hf_config(name, layers, use_cache=True)


def _check_same_nodes(prefill: Graph, decode: Graph, spec: str) -> None:
    """One placement fits both only if they have the same nodes reading the same nodes."""
    a = [(n.id, n.inputs) for n in prefill.nodes]
    b = [(n.id, n.inputs) for n in decode.nodes]
    if a != b:
        first = next((x[0] for x, y in zip(a, b, strict=False) if x != y), "(their number)")
        raise UserInputError(f"{spec}: the prefill and decode programs differ at node {first}, so one plan cannot "
                             "place both; this model's generation is not supported")


def check_fits(steps: StepGraphs, plan: Plan, problems: tuple[Problem, Problem]) -> None:
    """InfeasibleError when a device cannot hold its weights and the KV cache of `steps.sessions`
    sessions at this context (the step graphs count the cache among their nodes' parameters,
    `StepGraphs.for_sessions`), naming the bytes on each side."""
    from coinfer.cost import evaluate

    for graph_plan, problem in ((steps.prefill_plan(plan), problems[0]), (plan, problems[1])):
        short = [v.message for v in evaluate(graph_plan, problem).violations if v.kind == "memory"]
        if short:
            sessions = "one session" if steps.sessions == 1 else f"{steps.sessions} sessions"
            raise InfeasibleError(f"{steps.spec} at a context of {steps.context} positions (weights plus the KV "
                                  f"cache of {sessions}): {'; '.join(short)}; place fewer layers there, or ask for "
                                  "a shorter context or fewer sessions")
