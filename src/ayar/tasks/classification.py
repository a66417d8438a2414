"""Sequence classification: a label per text."""

from ayar.tasks.registry import TaskSpec, register_task

CLASSIFICATION = register_task(TaskSpec(
    "classification", "A label per text (sequence classification head).",
    "AutoModelForSequenceClassification", "SEQ_CLS", ("classification",), generative=False, label_map=True,
    encode="ayar.train.tasks:encode_classification",  # ``text`` and ``label`` (a string or an int)
    collator="ayar.train.tasks:classification_collator",
    evaluate="ayar.eval.tasks:evaluate_classification",  # accuracy, P/R/F1, confusion matrix
    prompt="ayar.eval.tasks:text_prompt"))
