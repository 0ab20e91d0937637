"""Every optimizer flag combination the backend tests run, shared by the CPU and CUDA tests."""

SGD_FLAGS = [
    {},
    dict(momentum=0.9),
    dict(momentum=0.9, dampening=0.4),
    dict(momentum=0.9, nesterov=True),
    dict(weight_decay=0.1),
    dict(momentum=0.7, weight_decay=0.1, maximize=True),
    dict(momentum=0.5, nesterov=True, weight_decay=0.01, maximize=True),
]
ADAM_FLAGS = [
    ("Adam", {}),
    ("Adam", dict(weight_decay=0.1)),
    ("Adam", dict(amsgrad=True)),
    ("Adam", dict(maximize=True, weight_decay=0.01)),
    ("Adam", dict(decoupled_weight_decay=True, weight_decay=0.1)),
    ("Adam", dict(betas=(0.2, 0.5), eps=1e-4, amsgrad=True)),
    ("AdamW", {}),
    ("AdamW", dict(amsgrad=True, maximize=True, weight_decay=0.3)),
]
