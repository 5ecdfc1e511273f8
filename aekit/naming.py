"""How a message names an option the user set: in the words of the front end the options came through.

The checks deep down (a model config's, the trainer's) name the options they refuse with :func:`option`, and the front
end that took the options chooses the words (:func:`speaking`): the command line's flags by default (``--code-dim
3``), the scikit-learn estimators' parameters (``n_components=3``), config.json's fields (``model.code_dim``). So one
message serves every front end, and none speaks another's words.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

# The value of an option named without one.
ANY = object()

# A front end's words: an option's name (a run option or a model config field, e.g. "code_dim") and value (or ANY)
# as the front end writes them, or None for an option it does not have.
Words = Callable[[str, object], "str | None"]


def flag(name: str, value=ANY) -> str:
    """The command line's words: ``--code-dim``, ``--code-dim 3``, ``--hidden 256,128``, ``--binarize`` (True) and
    ``--no-standardize`` (False)."""
    dashed = name.replace("_", "-")
    if value is ANY or value is True:
        return f"--{dashed}"
    if value is False:
        return f"--no-{dashed}"
    return f"--{dashed} {','.join(map(str, value)) if isinstance(value, (tuple, list)) else value}"


_WORDS: contextvars.ContextVar[Words] = contextvars.ContextVar("aekit_option_words", default=flag)


def option(name: str, value=ANY) -> str | None:
    """The option ``name``, set to ``value`` where one is given, in the words of the front end at work; None where
    that front end has no such option."""
    return _WORDS.get()(name, value)


@contextlib.contextmanager
def speaking(words: Words) -> Iterator[None]:
    """Messages made in the block name options with ``words``."""
    token = _WORDS.set(words)
    try:
        yield
    finally:
        _WORDS.reset(token)
