"""The one error kernel readiness raises."""


class KernelNotReady(RuntimeError):
    """The kernel cannot run hostagent's BPF programs; ``str()`` is one sentence for the operator."""
