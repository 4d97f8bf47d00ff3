"""The kinds of failure a person sees as a sentence rather than a traceback."""

HOW_TO_FIX = (
    "Start the app with --model /path/to/a/folder that holds the weights (PHI_DEMO_MODEL), "
    "or with --model tiny-random to try the interface on a tiny offline model."
)


class UserInputError(ValueError):
    """The user gave us something we cannot use; the message says what and why."""


class SettingError(ValueError):
    """A start-up setting (flag, PHI_DEMO_* variable, config file) cannot be used or honoured;
    the message names the setting, the value and what is allowed. Programs exit 2 on it."""


class ModelUnavailable(RuntimeError):
    """The model cannot be loaded; the message says why and how to fix it."""
