"""Knowledge distillation: a teacher's soft predictions teach the student beside the labels.

loss = alpha * CE(labels) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T)),
over the response tokens of a causal LM (the positions whose next token is a label) and over the
classes of a classifier. The student is prepared by another method (``base``: full, layers, lora...).

With ``student_layers`` the student is built from the loaded model (``model.name_or_path``, usually
the teacher's own base) by keeping some of its transformer blocks, each initialised with that
block's weights, as DistilBERT did (Sanh et al., 2019: every other layer of the teacher).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ayar.console import say
from ayar.data.tokenize import IGNORE_INDEX
from ayar.errors import AyarError, UsageError
from ayar.methods import get_method, register
from ayar.methods.structure import block_stacks, parse_block_spec
from ayar.methods.wrapping import WrappedParams, WrappingMethod
from ayar.run_folder import RunFolder
from ayar.tasks import get_task

CACHE_FILE = "teacher_logits.safetensors"


class DistillParams(WrappedParams):

    teacher: str = Field(..., description="Teacher: a model folder, a hub id, or an earlier run folder "
                         "(its model/ is used); adapter folders load with their base.")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the label loss; 1 - alpha goes to the KL term "
                         "(1: labels alone, no teacher loaded: the baseline to compare a distilled student with).")
    temperature: float = Field(2.0, gt=0, description="Softens both distributions; the KL is scaled by T^2.")
    cache: bool = Field(False, description="Run the teacher once over the training split and keep its top-k "
                        "logits on disk (run_dir/teacher_logits.safetensors) instead of on every step.")
    top_k: int = Field(64, ge=1, description="Teacher logits kept per position when caching (bounds the file).")
    student_layers: int | str | list[int] | None = Field(
        None, description="Build the student from the loaded model by keeping some of its blocks: a count "
        "(evenly spaced, first and last kept), a Python slice ('::2': every other block) or a list of indices. "
        "Empty: the loaded model as it is.")

    @model_validator(mode="after")
    def _student_is_saved_whole(self) -> DistillParams:
        if self.student_layers is not None and get_method(self.base).is_adapter:
            # An adapter is saved against its base's name; that base is the model before its blocks
            # were dropped, so the saved adapter would not load onto the student.
            raise ValueError(f"student_layers needs a base method that saves the whole model (full, layers...), "
                             f"not the adapter method '{self.base}'")
        if isinstance(self.student_layers, int) and self.student_layers < 1:
            raise ValueError("student_layers must keep at least one block")
        return self


def resolve_teacher(spec: str) -> str:
    """A run folder's model/ for an earlier run, else the folder or hub id as given."""
    path = Path(spec)
    if RunFolder(path).has_model() and not (path / "config.json").is_file():
        return str(RunFolder(path).model)
    if spec.startswith(("/", "./", "../", "runs/")) and not path.exists():
        raise UsageError(f"method.teacher '{spec}' does not exist: train the teacher first (e.g. run its recipe)")
    return spec


def student_block_indices(spec: int | str | list[int], length: int) -> list[int]:
    """The blocks a student keeps out of ``length``: a count (evenly spaced, ends kept), a slice or indices."""
    if isinstance(spec, int):
        if spec > length:
            raise UsageError(f"method.student_layers {spec}: the model has only {length} blocks")
        if spec == 1:
            return [length - 1]
        return sorted({round(i * (length - 1) / (spec - 1)) for i in range(spec)})
    if isinstance(spec, str):
        keep = parse_block_spec(spec, length)
    else:
        keep = sorted({parse_block_spec(i, length)[0] for i in spec})
    if not keep:
        raise UsageError(f"method.student_layers {spec!r} keeps no block of {length}")
    return keep


def drop_blocks(model: nn.Module, spec: int | str | list[int]) -> list[int]:
    """Keep only the chosen transformer blocks of ``model``, in place; returns their old indices.

    transformers has no layer-pruning API for decoders, so the stack is rebuilt here: the kept
    blocks keep their weights, their attention's ``layer_idx`` (the KV-cache slot) is renumbered,
    and the config's layer count and per-layer lists follow, so the saved folder loads as is.
    """
    stacks = block_stacks(model)
    if len(stacks) != 1:
        raise UsageError(f"method.student_layers needs a model with one stack of blocks; "
                         f"{type(model).__name__} has {len(stacks)}")
    _, stack = stacks[0]
    length = len(stack)
    keep = student_block_indices(spec, length)
    for new_index, old_index in enumerate(keep):
        for module in stack[old_index].modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    for index in sorted(set(range(length)) - set(keep), reverse=True):
        del stack[index]
    config = model.config
    for name, values in vars(config).items():  # per-layer lists such as layer_types
        if name.endswith("layer_types") and isinstance(values, list) and len(values) == length:
            setattr(config, name, [values[i] for i in keep])
    config.num_hidden_layers = len(keep)
    return keep


def label_positions(logits: torch.Tensor, labels: torch.Tensor, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, targets) of the items that carry a label: next-token positions for causal LMs, rows otherwise."""
    if get_task(task).next_token:
        logits, labels = logits[:, :-1], labels[:, 1:]
    keep = labels != IGNORE_INDEX
    return logits[keep], labels[keep]


def kd_kl(student: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
          teacher_index: torch.Tensor | None = None) -> torch.Tensor:
    """Per-item KL(teacher || student) at temperature T, times T^2.

    With ``teacher_index`` the teacher is top-k (values renormalised over those k classes) and the
    student's full-vocabulary log-probabilities are read at the same classes.
    """
    log_student = F.log_softmax(student.float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if teacher_index is not None:
        log_student = log_student.gather(-1, teacher_index)
    return (log_teacher.exp() * (log_teacher - log_student)).sum(-1) * temperature**2


def items_loss(per_item: torch.Tensor, num_items_in_batch: Any) -> torch.Tensor:
    """Sum over the accumulated batch's items when the Trainer counted them, else the micro-batch mean."""
    if num_items_in_batch is not None:
        return per_item.sum() / num_items_in_batch
    return per_item.mean() if per_item.numel() else per_item.sum()


def check_same_vocab(student_tok: Any, teacher_tok: Any, student: Any, teacher: Any, task: str) -> None:
    """A UsageError unless teacher and student read the same tokens and predict the same classes."""
    s_vocab, t_vocab = student_tok.get_vocab(), teacher_tok.get_vocab()
    if s_vocab != t_vocab:
        diff = sorted(set(s_vocab.items()) ^ set(t_vocab.items()))[:3]
        raise UsageError(f"method 'distill': teacher and student tokenizers differ ({len(t_vocab)} vs "
                         f"{len(s_vocab)} tokens; e.g. {diff}); distillation needs one shared vocabulary")
    if get_task(task).label_map:
        s_labels, t_labels = student.config.id2label, teacher.config.id2label
        if {int(k): v for k, v in s_labels.items()} != {int(k): v for k, v in t_labels.items()}:
            raise UsageError(f"method 'distill': teacher labels {dict(t_labels)} differ from the student's "
                             f"{dict(s_labels)}")


@register
class Distill(WrappingMethod):
    name = "distill"
    summary = "Knowledge distillation: a bigger teacher's soft predictions train a smaller student."
    params_model = DistillParams
    tasks = ("causal_lm", "classification")

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self.teacher: torch.nn.Module | None = None
        self.cached: dict[str, torch.Tensor] | None = None

    def setup(self, model: torch.nn.Module, tokenizer: Any, train_dataset: Any, run_dir: Any) -> None:
        from ayar.models.load import load_for_inference

        super().setup(model, tokenizer, train_dataset, run_dir)
        if self.labels_only:
            say("distill: alpha is 1, so the student trains on the labels alone (no teacher is loaded)")
            return
        teacher, teacher_tok = load_for_inference(resolve_teacher(self.params.teacher), self.task)
        check_same_vocab(tokenizer, teacher_tok, model, teacher, self.task)
        self.attach_teacher(teacher, model)
        if self.params.cache:
            if run_dir is None:
                raise AyarError("method 'distill': cache needs a run folder")
            self.cached = cache_teacher_logits(self.teacher, train_dataset, self.task, self.params.top_k,
                                               Path(run_dir) / CACHE_FILE, tokenizer.pad_token_id or 0)

    def prepare_model(self, model: torch.nn.Module, task: str) -> torch.nn.Module:
        if self.params.student_layers is not None:
            before = sum(p.numel() for p in model.parameters())
            keep = drop_blocks(model, self.params.student_layers)
            after = sum(p.numel() for p in model.parameters())
            say(f"distill: the student keeps blocks {keep} of the loaded model ({after:,} of {before:,} "
                  "parameters)")
        return super().prepare_model(model, task)

    def attach_teacher(self, teacher: torch.nn.Module, student: torch.nn.Module) -> None:
        """Use ``teacher`` frozen, in eval mode, on the student's device."""
        device = next(student.parameters()).device
        self.teacher = teacher.to(device).eval().requires_grad_(False)

    @property
    def labels_only(self) -> bool:
        """alpha 1: the KL term weighs nothing, so no teacher is needed."""
        return self.params.alpha == 1.0

    def model_inputs_extra(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*super().model_inputs_extra(), "example_index")))

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any], meta: dict[str, Any],
                     num_items_in_batch: Any) -> tuple[torch.Tensor, Any]:
        labels = inputs["labels"]
        if self.labels_only:  # the baseline a distilled student is measured against: same student, no teacher
            outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
            student, targets = label_positions(outputs.logits, labels, self.task)
            return items_loss(F.cross_entropy(student.float(), targets, reduction="none"), num_items_in_batch), outputs
        if self.teacher is None and self.cached is None:
            raise AyarError("method 'distill': no teacher (setup did not run)")
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
        student, targets = label_positions(outputs.logits, labels, self.task)
        if self.cached is not None:
            teacher_vals, teacher_idx = lookup_cached(self.cached, meta["example_index"], student.device)
            if teacher_vals.shape[0] != student.shape[0]:
                raise AyarError("method 'distill': cached teacher logits do not match this batch; delete "
                                f"{CACHE_FILE} from the run folder and train again")
        else:
            with torch.no_grad():
                teacher_out = self.teacher(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"))
            teacher_vals, _ = label_positions(teacher_out.logits, labels, self.task)
            teacher_idx = None
        width = min(student.shape[-1], teacher_vals.shape[-1]) if teacher_idx is None else student.shape[-1]
        ce = F.cross_entropy(student[:, :width].float(), targets, reduction="none")
        kl = kd_kl(student[:, :width], teacher_vals[:, :width] if teacher_idx is None else teacher_vals,
                   self.params.temperature, teacher_idx)
        per_item = self.params.alpha * ce + (1 - self.params.alpha) * kl
        return items_loss(per_item, num_items_in_batch), outputs


@torch.no_grad()
def cache_teacher_logits(teacher: torch.nn.Module, dataset: Any, task: str, top_k: int, path: Path,
                         pad_id: int, batch_size: int = 16) -> dict[str, torch.Tensor]:
    """Top-k teacher logits of every labelled position, with per-example offsets, saved as safetensors.

    Rows are stored in ``example_index`` order. An existing file made with the same top-k for the
    same number of examples is reused (a resumed or repeated run).
    """
    stamp = {"top_k": str(top_k), "examples": str(len(dataset))}
    if path.is_file():
        with safe_open(str(path), framework="pt") as handle:
            if handle.metadata() == stamp:
                return load_file(str(path))
    device = next(teacher.parameters()).device
    parts: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start:start + batch_size]
        width = max(len(ids) for ids in rows["input_ids"])
        ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows["input_ids"]], device=device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows["input_ids"]], device=device)
        if not get_task(task).label_map:  # one label per token, padded
            labels = torch.tensor([r + [IGNORE_INDEX] * (width - len(r)) for r in rows["labels"]], device=device)
        else:
            labels = torch.tensor(rows["labels"], device=device)
        logits = teacher(input_ids=ids, attention_mask=mask).logits
        for row, example in enumerate(rows["example_index"]):
            picked, _ = label_positions(logits[row:row + 1], labels[row:row + 1], task)
            top = picked.float().topk(min(top_k, picked.shape[-1]), dim=-1)
            parts[example] = (top.values.cpu(), top.indices.cpu())
    if sorted(parts) != list(range(len(dataset))):
        raise AyarError("method 'distill': example_index must number the training rows 0..n-1 to cache")
    ordered = [parts[e] for e in range(len(dataset))]
    counts = torch.tensor([v.shape[0] for v, _ in ordered], dtype=torch.long)
    cached = {"values": torch.cat([v for v, _ in ordered]), "index": torch.cat([i for _, i in ordered]),
              "offsets": torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(cached, str(path), metadata=stamp)
    return cached


def lookup_cached(cached: dict[str, torch.Tensor], example_index: torch.Tensor,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The cached (values, indices) of a batch's examples, in batch order."""
    offsets = cached["offsets"]
    spans = [range(int(offsets[e]), int(offsets[e + 1])) for e in example_index.tolist()]
    rows = torch.tensor([i for span in spans for i in span], dtype=torch.long)
    return cached["values"][rows].to(device), cached["index"][rows].to(device)
