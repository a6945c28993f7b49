"""Plain parsing of the API commands' simple parameters, keeping pydantic out of them.

typer (0.29) converts every non-boolean parameter with a pydantic TypeAdapter, and the
first conversion imports pydantic: ~60 ms of the 200 ms `nodenet peers` may take
(DESIGN §5), spent turning strings into strings. `QuickCommand` gives each parameter whose
type is plain (str, int, float, bool, an Enum, or a list of one of those; numbers checked
against the option's `min`/`max`) a converter written here, and `QuickGroup` does the same
for the top-level options; anything else is still converted by typer. This leans on typer internals
(`typer._coercion.RuntimeParam`, `_TyperParameter._runtime_param`); if a future typer
changes them, the hook steps aside, the commands stay correct but slower, and
tests/cli/test_cli_startup.py fails because pydantic is imported again.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, get_args, get_origin

import typer
from typer.core import TyperCommand, TyperGroup

__all__ = ["QuickCommand", "QuickGroup"]

try:
    from typer._coercion import RuntimeParam
except ImportError:  # a typer that converts without pydantic: nothing to avoid
    RuntimeParam = None  # type: ignore[assignment,misc]

PLAIN_TYPES = (str, int, float, bool)
BOOLEANS = {"1": True, "true": True, "yes": True, "on": True}
BOOLEANS |= {"0": False, "false": False, "no": False, "off": False}


def _convert(kind: type, value: Any, param: Any, ctx: Any) -> Any:
    if isinstance(value, kind):
        return value
    try:
        if kind is bool:  # bool("false") is True: parse the words instead
            return BOOLEANS[str(value).strip().lower()]
        return kind(value)
    except (KeyError, ValueError):
        if issubclass(kind, Enum):
            choices = ", ".join(str(member.value) for member in kind)
            message = f"{value!r} is not one of {choices}."
        else:
            message = f"{value!r} is not a valid {kind.__name__}."
        raise typer.BadParameter(message, ctx=ctx, param=param) from None


if RuntimeParam is not None:

    class _PlainParam(RuntimeParam):
        """Converts by calling the type: str(v), float(v), Status(v), per item for lists."""

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            if isinstance(value, list | tuple):
                (item,) = get_args(self.annotation)
                return [_convert(item, v, param, ctx) for v in value]
            converted = _convert(self.annotation, value, param, ctx)
            low, high = self.parameter_info.min, self.parameter_info.max
            if isinstance(converted, int | float) and not isinstance(converted, bool):
                too_low = low is not None and converted < low
                if too_low or (high is not None and converted > high):
                    bounds = f"{'' if low is None else low}..{'' if high is None else high}"
                    raise typer.BadParameter(
                        f"{converted} is not in the range {bounds}.", ctx=ctx, param=param
                    )
            return converted


def _is_plain(kind: Any) -> bool:
    return isinstance(kind, type) and (kind in PLAIN_TYPES or issubclass(kind, Enum))


def _make_plain(param: Any) -> None:
    descriptor = getattr(param, "type_descriptor", None)
    if RuntimeParam is None or descriptor is None:
        return
    if getattr(param, "_runtime_param", "absent") is not None:
        return  # already set up, or a typer without this hook
    kind = descriptor.annotation
    item = get_args(kind)[0] if get_origin(kind) is list else kind
    if descriptor.parameter_info.parser is None and _is_plain(item):
        param._runtime_param = _PlainParam(
            parameter_info=descriptor.parameter_info, annotation=kind
        )


class QuickCommand(TyperCommand):
    """A typer command whose plain parameters are converted without importing pydantic."""

    def get_params(self, ctx: Any) -> list[Any]:
        """The parameters (with the per-context --help), with plain converters set up."""
        params: list[Any] = super().get_params(ctx)
        for param in params:
            _make_plain(param)
        return params


class QuickGroup(TyperGroup):
    """The same for a group's own options (`nodenet --version`, the completion flags)."""

    def get_params(self, ctx: Any) -> list[Any]:
        """The parameters (with the per-context --help), with plain converters set up."""
        params: list[Any] = super().get_params(ctx)
        for param in params:
            _make_plain(param)
        return params
