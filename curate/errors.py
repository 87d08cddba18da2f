"""Errors a user can act on.

`UserError` and its subclasses are the user's mistakes (bad config, bad input, unknown id):
the CLI prints their message and exits with code 2, no traceback. Anything else is a bug in
curate and exits with 1.
"""

from __future__ import annotations

from dataclasses import dataclass


class UserError(Exception):
    """A problem the user can fix; the message says what, where, and how."""

    exit_code = 2


@dataclass(frozen=True)
class Problem:
    """One problem in a config or input file: where it is, what was found, what to do."""

    key: str
    message: str
    value: object = None
    file: str | None = None

    def render(self) -> str:
        where = f"{self.file}: " if self.file else ""
        shown = "" if self.value is None else f" (got {self.value!r})"
        return f"{where}{self.key}: {self.message}{shown}"


class ConfigError(UserError):
    """Every problem found in one config, reported together."""

    def __init__(self, problems: list[Problem], file: str | None = None):
        self.problems = problems
        self.file = file
        head = f"{file}: " if file else ""
        n = len(problems)
        lines = [f"{head}{n} problem{'s' if n != 1 else ''} in the config:"]
        lines += [f"  - {p.render()}" for p in problems]
        super().__init__("\n".join(lines))


class InputError(UserError):
    """A data file that cannot be read at all (in --strict mode: any bad row)."""


class UnknownIdError(UserError):
    """A manifest id, prefix or tag that does not resolve."""


class IntegrityError(UserError):
    """A stored object whose bytes no longer match its name."""
