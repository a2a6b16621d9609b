"""The Jinja environment the report pages render with (templates/*.html.j2), and the filters that format
their numbers. Autoescape is on: every value is text unless it arrives as `markupsafe.Markup`."""

from __future__ import annotations

from functools import cache
from typing import Any

import jinja2


def num(value: Any) -> str:
    """A table cell's text: thousands separators, 4 significant digits, yes/no, — for no value."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def usd(value: float) -> str:
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


def ratio(part: float, whole: float) -> str:
    """`part` as a percentage of `whole`; — when there is no whole."""
    return f"{100 * part / whole:.0f}%" if whole else "—"


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("vpo.pages", "templates"),
        autoescape=True,
        # A missing value is a bug in the page's code, not an empty cell.
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(num=num, usd=usd, ratio=ratio)
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)
