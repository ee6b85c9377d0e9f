"""The one exception fxpsim raises for bad input.

Every message names the value, the rule it breaks and the fix, on one line
(the CLI prints it as is and exits non-zero). It is a ``ValueError`` so that
library users can catch it the ordinary way.
"""


class FxpsimError(ValueError):
    """Bad input to fxpsim: a one-line message naming value, rule and fix."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`FxpsimError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise FxpsimError(message)
