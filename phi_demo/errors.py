"""The two kinds of failure a person sees as a sentence rather than a traceback."""


class UserInputError(ValueError):
    """The user gave us something we cannot use; the message says what and why."""


class ModelUnavailable(RuntimeError):
    """The model cannot be loaded; the message says why and how to fix it."""
