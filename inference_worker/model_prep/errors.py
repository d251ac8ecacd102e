"""The one error of model preparation: its message says what to do next."""


class ModelPrepError(RuntimeError):
    """Preparing the embedded model failed; the message says what to do next."""
