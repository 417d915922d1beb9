"""Training: the only package that imports torch, transformers, trl and peft (lazily, inside functions)."""
