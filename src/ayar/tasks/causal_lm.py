"""Decoder-only language modelling: instructions, chats or plain text in, text out."""

from ayar.tasks.registry import TaskSpec, register_task

CAUSAL_LM = register_task(TaskSpec(
    "causal_lm", "Decoder-only language model: instructions, chats or plain text in, text out.",
    "AutoModelForCausalLM", "CAUSAL_LM", ("alpaca", "messages", "sharegpt", "text"), generative=True,
    chat=True, next_token=True,
    encode="ayar.train.tasks:encode_causal_lm",  # chat records with the prompt masked, or plain text
    collator="ayar.train.tasks:causal_lm_collator",
    evaluate="ayar.eval.tasks:evaluate_causal_lm",  # response perplexity, generations, text and tool metrics
    prompt="ayar.eval.tasks:chat_prompt"))
