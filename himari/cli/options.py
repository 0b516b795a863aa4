"""Shared option checks for every command: dates are validated while the command line is parsed, so a bad date is
a usage error (exit 2, naming the option) before any command runs or creates a directory.

:func:`check_dates` gives every string option named like a date (``--start``, ``--end``, ``--train-start``,
``--val-end``, ``--test-start``, ...) the :class:`DateParam` type. The value the command receives is unchanged (the
string as typed), so commands parse it as before.
"""

from __future__ import annotations

import re
from typing import Any

import click

DATE_OPTION = re.compile(r"(^|_)(start|end|since|until)$")
RELATIVE_WORDS = {"now", "today", "yesterday", "tomorrow"}


class DateParam(click.ParamType):
    """A UTC date or date-time (``2024-01-01``, ``2024-01-01T12:00``, ``2024-01-01T12:00Z``, ``2024``)."""

    name = "date"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or not isinstance(value, str):
            return value
        text = value.strip()
        if text.lower() in RELATIVE_WORDS:
            self.fail(f"{value!r} is relative; give a date such as 2024-01-01 (UTC) so the run can be repeated",
                      param, ctx)
        import pandas as pd

        try:
            pd.Timestamp(text)
        except (ValueError, TypeError, OverflowError) as exc:
            reason = str(exc).split(":")[0].strip() or "not a date"
            self.fail(f"{value!r} is not a date ({reason}); use YYYY-MM-DD or ISO 8601, UTC", param, ctx)
        return value


DATE = DateParam()


def check_dates(command: click.Command) -> None:
    """Give date-named string options of ``command`` and all its subcommands the :data:`DATE` type."""
    for param in command.params:
        if (isinstance(param, click.Option) and param.name and DATE_OPTION.search(param.name)
                and isinstance(param.type, click.types.StringParamType)):
            param.type = DATE
    if isinstance(command, click.Group) and not getattr(command, "lazy", False):
        for sub in command.commands.values():
            check_dates(sub)
