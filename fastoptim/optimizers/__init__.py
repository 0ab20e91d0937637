from .base import SGD, Adam, AdamW, Optimizer  # noqa: F401
