"""Encoder-decoder generation: a source text in, a target text out."""

from ayar.tasks.registry import TaskSpec, register_task

SEQ2SEQ = register_task(TaskSpec(
    "seq2seq", "Encoder-decoder: a source text in, a target text out.",
    "AutoModelForSeq2SeqLM", "SEQ_2_SEQ_LM", ("seq2seq",), generative=True,
    encode="ayar.train.tasks:encode_seq2seq",  # ``source`` and ``target``
    collator="ayar.train.tasks:seq2seq_collator",
    evaluate="ayar.eval.tasks:evaluate_seq2seq",  # target perplexity and generated-target text metrics
    prompt="ayar.eval.tasks:source_prompt"))
