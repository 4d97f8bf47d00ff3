"""Speech-to-text prompts (pure): which instruction the model gets for a language and task."""

from __future__ import annotations

from .errors import UserInputError

# The eight speech languages of the model card.
LANGUAGES = {
    "auto": None, "en": "English", "zh": "Chinese", "de": "German", "fr": "French",
    "it": "Italian", "ja": "Japanese", "es": "Spanish", "pt": "Portuguese",
}
TASKS = ("transcribe", "translate")


def language_name(code_or_name: str) -> str | None:
    key = (code_or_name or "auto").strip()
    if key.lower() in LANGUAGES:
        return LANGUAGES[key.lower()]
    for name in LANGUAGES.values():
        if name and name.lower() == key.lower():
            return name
    raise UserInputError(
        f"Unknown speech language {code_or_name!r}; choose one of: "
        + ", ".join(f"{c} ({n})" for c, n in LANGUAGES.items() if n) + ", or auto."
    )


def instruction(language: str = "auto", task: str = "transcribe") -> str:
    """The user text that goes after the <|audio|> slot."""
    if task not in TASKS:
        raise UserInputError(f"Unknown task {task!r}; choose transcribe or translate.")
    lang = language_name(language)
    if task == "translate":
        source = f" {lang}" if lang else ""
        return f"Translate the{source} audio to English. Give only the English translation."
    hint = f" The speech is in {lang}." if lang else ""
    return f"Transcribe the audio clip into text.{hint} Give only the transcript."
