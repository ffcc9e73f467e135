"""User-facing errors.

A `UnituneError` is a mistake in the user's input (a config key, a data row, a
model name). The CLI prints its message on one line and exits with status 2, no
traceback. Anything else escaping is a bug in unitune and keeps its traceback.
"""

import difflib


class UnituneError(Exception):
    """An error the user can fix; its message says what and where."""


def suggest(word: str, choices) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
