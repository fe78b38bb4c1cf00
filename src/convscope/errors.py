"""How convscope shows an error in one line: the command line's `error: …` and the trainer's
answers to the dashboard. It imports nothing (not torch): a bad option is reported at once."""


def one_line(exc: BaseException) -> str:
    """An exception as the one line convscope shows (KeyError's quotes dropped, whitespace folded)."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError) and text.startswith("'") and text.endswith("'"):
        text = text[1:-1]
    return " ".join(text.split())
