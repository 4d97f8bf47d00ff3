"""What the model is asked to do with speech: the model card's transcription and translation instructions, in its eight speech languages."""

from __future__ import annotations

from phi_demo.errors import UserInputError

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


def instruction(language: str = "auto", task: str = "transcribe", to: str = "en") -> str:
    """The user text that goes after the <|audio|> slot: the model card's forms ("Transcribe
    the audio clip into text.", "Translate the audio to French."), with the spoken language
    as a hint when it is known."""
    if task not in TASKS:
        raise UserInputError(f"Unknown task {task!r}; choose transcribe or translate.")
    lang = language_name(language)
    hint = f" The speech is in {lang}." if lang else ""
    if task == "translate":
        target = language_name(to)
        if target is None:
            raise UserInputError("Say which language to translate into: en, zh, de, fr, it, ja, es or pt.")
        return f"Translate the audio to {target}.{hint} Give only the {target} translation."
    return f"Transcribe the audio clip into text.{hint} Give only the transcript."
