"""One error type for every user-facing failure.

Its message is a single line naming the file (and line where known), the field and what was expected, so the CLI
can print it without a traceback and exit with code 2.
"""

from __future__ import annotations

from pathlib import Path


class FlanmixError(Exception):
    """A problem with user input (a spec, a template, a data file, a config)."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        expected: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        self.expected = expected
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        field = f"{self.field}: " if self.field else ""
        expected = f" (expected {self.expected})" if self.expected else ""
        return f"{where}{field}{self.message}{expected}".replace("\n", " ")

    def with_context(self, *, file: str | Path | None = None, line: int | None = None,
                     field: str | None = None) -> FlanmixError:
        """Fill in location details that the raiser did not know (a line only if it is a line of the error's file:
        the line of a mixture is no line of the data file it names)."""
        same_file = self.file is None or file is None or str(file) == self.file
        return FlanmixError(
            self.message,
            file=self.file or (str(file) if file is not None else None),
            line=self.line or (line if same_file else None),
            field=self.field or field,
            expected=self.expected,
        )


class SourceUnavailable(FlanmixError):
    """A task's data cannot be reached here: a hub source with no network and no mirror, or a source missing from
    the mirror in use. A build stops on it (exit 2); `tasks validate` reports such tasks as not checked on rows."""
