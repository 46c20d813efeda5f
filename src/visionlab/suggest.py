"""`did you mean ...?` for a mistyped name, from the names that exist (docs/architecture.md, "Config checks")."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, names: Iterable[str]) -> str | None:
    """The name `word` most likely misspells: transposed, missing or extra letters, another case."""
    names = list(dict.fromkeys(names))
    by_case = {name.lower(): name for name in names}
    if word.lower() in by_case and by_case[word.lower()] != word:
        return by_case[word.lower()]
    found = difflib.get_close_matches(word.lower(), list(by_case), n=1, cutoff=0.6)
    return by_case[found[0]] if found else None


def did_you_mean(word: str, names: Iterable[str], shown: str = "{}") -> str:
    """`did you mean trainer.epochs?`, or "" when no name is close; `shown` dresses the name (`{}=3`)."""
    name = closest(word, names)
    return f"did you mean {shown.format(name)}?" if name else ""
