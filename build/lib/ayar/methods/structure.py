"""Find the parts of a transformer generically: block stacks, head, embeddings, norms, layer groups.

No library names these parts across architectures (peft only maps module names for its own
tuners), so this is written here once and shared by the ``layers``, ``gradual_unfreeze`` and
``transfer`` methods. It works on decoders (Llama, GPT-2), encoders (BERT) and
encoder-decoders (T5, whose encoder and decoder each hold a stack of blocks).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ayar.errors import UsageError

# A stack smaller than this share of the largest one is not a stack of transformer blocks
# (e.g. a small list of adapters); T5's decoder may have fewer blocks than its encoder.
_MIN_STACK_SHARE = 0.25


@dataclass
class ParamGroup:
    """A named set of parameters that is frozen or trained together."""

    name: str
    params: list[nn.Parameter] = field(default_factory=list)

    def numel(self) -> int:
        """Number of scalar weights in the group."""
        return sum(p.numel() for p in self.params)


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def block_stacks(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    """The model's stacks of transformer blocks, in forward order (T5: encoder then decoder).

    A stack is an outermost ``nn.ModuleList`` whose children share one class and hold weights;
    lists nested in a block (T5's ``layer``, MoE experts) are not stacks.
    """
    found: list[tuple[str, nn.ModuleList]] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if any(name.startswith(f"{outer}.") for outer, _ in found):
            continue
        if len({type(child) for child in module}) == 1 and _numel(module) > 0:
            found.append((name, module))
    if not found:
        raise UsageError(f"no stack of transformer blocks found in {type(model).__name__}")
    largest = max(_numel(stack) for _, stack in found)
    return [(name, stack) for name, stack in found if _numel(stack) >= _MIN_STACK_SHARE * largest]


def head_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The task head: the output projection of an LM, or the new modules around a classifier's body.

    For ``XForSequenceClassification`` this is every child of the model beside its base model,
    plus the base model's ``pooler`` (BERT's pooler feeds only the classifier).
    """
    base = getattr(model, "base_model", model)
    if base is not model:
        heads = [(name, child) for name, child in model.named_children() if child is not base and _numel(child) > 0]
        prefix = next(name for name, child in model.named_children() if child is base)
        pooler = getattr(base, "pooler", None)
        if isinstance(pooler, nn.Module) and _numel(pooler) > 0:
            heads.append((f"{prefix}.pooler", pooler))
        if heads:
            return heads
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is None:
        raise UsageError(f"no task head found in {type(model).__name__}")
    name = next(n for n, m in model.named_modules() if m is output)
    return [(name, output)]


def task_head_names(model: nn.Module) -> list[str]:
    """Names of the task-specific children beside the base model (``classifier``, ``score``...).

    These are the weights a classification checkpoint adds on top of a pretrained body; adapter
    methods must train them in full (peft's ``modules_to_save``), else the head stays random.
    """
    base = getattr(model, "base_model", model)
    if base is model:
        return []
    return [name for name, child in model.named_children() if child is not base and _numel(child) > 0]


def norm_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every normalisation layer (LayerNorm, RMSNorm, T5LayerNorm...), wherever it sits."""
    return [(name, m) for name, m in model.named_modules()
            if "norm" in type(m).__name__.lower() and any(True for _ in m.parameters(recurse=False))]


def _ids(modules: list[tuple[str, nn.Module]]) -> set[int]:
    return {id(p) for _, m in modules for p in m.parameters()}


def embedding_params(model: nn.Module) -> list[nn.Parameter]:
    """Input-side weights outside the blocks: token/position embeddings and their norm (BERT)."""
    in_blocks = _ids(block_stacks(model))
    embeddings_parents = [m for n, m in model.named_modules() if n.split(".")[-1] in ("embeddings", "embed")]
    chosen: dict[int, nn.Parameter] = {}
    for module in model.modules():
        if isinstance(module, nn.Embedding) or any(module is parent for parent in embeddings_parents):
            for p in module.parameters():
                if id(p) not in in_blocks:
                    chosen[id(p)] = p
    return list(chosen.values())


def parse_block_spec(spec: str | int, length: int) -> list[int]:
    """Block indices for a Python-style index or slice (``3``, ``-1``, ``"-2:"``, ``"0:4"``, ``"::2"``)."""
    text = str(spec).strip()
    try:
        if ":" not in text:
            index = int(text)
            if not -length <= index < length:
                raise UsageError(f"block index {index} is out of range for {length} blocks")
            return [index % length]
        parts = [int(p) if p.strip() else None for p in text.split(":")]
    except ValueError:
        raise UsageError(f"block range '{spec}' is not an index or a Python slice like '-2:'") from None
    if len(parts) > 3 or parts[2:3] == [0]:
        raise UsageError(f"block range '{spec}' is not a valid Python slice")
    return list(range(length))[slice(*parts)]


def layer_groups(model: nn.Module, blocks_per_group: int = 1) -> list[ParamGroup]:
    """Every parameter in groups from the top down: head, block groups (top first), embeddings.

    Block group k holds the k-th ``blocks_per_group`` blocks counted from the top of every stack
    (for T5: from the encoder and the decoder alike). Weights outside blocks, head and embeddings
    (final norms) join the head group; a weight tied to the head (GPT-2's embeddings) is in the head.
    """
    seen: set[int] = set()

    def take(params: list[nn.Parameter]) -> list[nn.Parameter]:
        fresh = [p for p in params if id(p) not in seen]
        seen.update(id(p) for p in fresh)
        return fresh

    head = ParamGroup("head", take([p for _, m in head_modules(model) for p in m.parameters()]))
    stacks = block_stacks(model)
    depth = max(len(stack) for _, stack in stacks)
    blocks: list[ParamGroup] = []
    for top in range(0, depth, blocks_per_group):
        members = []
        params: list[nn.Parameter] = []
        for name, stack in stacks:
            indices = [len(stack) - 1 - k for k in range(top, top + blocks_per_group) if k < len(stack)]
            members += [f"{name}.{i}" for i in sorted(indices)]
            params += [p for i in indices for p in stack[i].parameters()]
        blocks.append(ParamGroup("blocks " + ",".join(members), take(params)))
    embeddings = ParamGroup("embeddings", take(embedding_params(model)))
    head.params += take(list(model.parameters()))  # final norms and anything else above the blocks
    return [g for g in (head, *blocks, embeddings) if g.params]


def set_trainable(model: nn.Module, params: list[nn.Parameter] | set[int]) -> None:
    """Train exactly ``params`` (parameters or their ids); freeze everything else."""
    ids = params if isinstance(params, set) else {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in ids)


def reinit_modules(model: nn.Module, modules: list[nn.Module]) -> None:
    """Draw fresh weights for ``modules`` with the model's own initialiser.

    transformers 5 marks loaded tensors ``_is_hf_initialized`` and its init functions then skip
    them, so the marks are cleared first.
    """
    init = getattr(model, "_init_weights", None)
    for module in modules:
        for sub in module.modules():
            for tensor in (*sub.parameters(recurse=False), *sub.buffers(recurse=False)):
                if hasattr(tensor, "_is_hf_initialized"):
                    del tensor._is_hf_initialized
            if hasattr(sub, "_is_hf_initialized"):
                del sub._is_hf_initialized
            if init is not None:
                init(sub)
            elif hasattr(sub, "reset_parameters"):
                sub.reset_parameters()


def decay_split(model: nn.Module, params: list[nn.Parameter]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(with weight decay, without) as the Trainer splits them: no decay on biases and norms."""
    from transformers import Trainer

    decay_names = set(Trainer.get_decay_parameter_names(None, model))  # uses no Trainer state
    decay_ids = {id(p) for n, p in model.named_parameters() if n in decay_names}
    return [p for p in params if id(p) in decay_ids], [p for p in params if id(p) not in decay_ids]


def optimizer_groups(
    model: nn.Module, groups: list[tuple[list[nn.Parameter], float]], weight_decay: float
) -> list[dict]:
    """Optimizer param-group dicts for (params, learning rate) pairs, frozen ones included.

    Frozen parameters are in the optimizer from the start so that unfreezing them later needs
    no new optimizer: torch's AdamW skips a parameter whose grad is None (no step, no decay).
    """
    out: list[dict] = []
    for params, lr in groups:
        decay, no_decay = decay_split(model, params)
        out += [{"params": ps, "lr": lr, "weight_decay": wd}
                for ps, wd in ((decay, weight_decay), (no_decay, 0.0)) if ps]
    return out


def trainable_summary(model: nn.Module) -> str:
    """'N trainable of M parameters (p%)'."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return f"{trainable:,} trainable of {total:,} parameters ({100 * trainable / max(total, 1):.2f}%)"

