"""What is wrong with a document a model refused, one problem per field: the field's path (by the names the
document uses, aliases included), what is wrong with it in words, and the value it had.

The configuration file (``obflow.config``), a DataPipeline's spec (the operator's validation) and the operator's
``--network-policies`` all report through :func:`field_problems`; each only decides how a path is written and
whether a value may be shown.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

UNSET: Any = object()
"""The value of a field the document did not set (it is missing, or its default is what failed)."""


@dataclass(frozen=True)
class FieldProblem:
    path: tuple[str, ...]
    message: str
    value: Any = UNSET

    def key(self, root: str = "") -> str:
        """The path dotted, under ``root`` when there is one (``spec.output.format``)."""
        return ".".join((root, *self.path) if root else self.path)


def field_problems(exc: ValidationError, model: type[BaseModel]) -> list[FieldProblem]:
    problems = []
    for error in exc.errors():
        path = [str(part) for part in error["loc"] if not str(part).startswith("function-")]
        message = _message(error["type"], str(error["msg"]), path, model)
        value = UNSET if error["type"] == "missing" else error.get("input", UNSET)
        # a rule across fields names the field it is about first ("maxReplicas: must be ..."): it goes on the path
        head, sep, rest = message.partition(": ")
        if sep and isinstance(value, Mapping) and head in known_fields(model, path):
            path, message, value = [*path, head], rest, value.get(head, UNSET)
        elif sep and not path and "." in head:  # a rule across sections names the dotted key it is about
            path, message = head.split("."), rest
            for part in path:
                value = value.get(part, UNSET) if isinstance(value, Mapping) else UNSET
        problems.append(FieldProblem(tuple(path), message, value))
    return problems


def short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _message(kind: str, pydantic_message: str, path: list[str], model: type[BaseModel]) -> str:
    if kind == "missing":
        return "required; set it"
    if kind == "extra_forbidden":
        known = known_fields(model, path[:-1])
        close = difflib.get_close_matches(path[-1], known, n=1) if path else []
        hint = f"did you mean '{close[0]}'?" if close else f"known fields here: {', '.join(sorted(known))}"
        return f"unknown field; {hint}"
    message = pydantic_message.removeprefix("Value error, ")
    return message[0].lower() + message[1:] if message else message


def known_fields(model: type[BaseModel], path: list[str]) -> list[str]:
    """The fields a document may set at ``path`` of ``model``, by the names it uses (an alias, else the name)."""
    for part in path:
        if part.isdigit():  # a list's item
            continue
        fields = {field.alias or name: field for name, field in model.model_fields.items()}
        field = fields.get(part) or model.model_fields.get(part)
        annotation = field.annotation if field else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        elif field is not None and getattr(annotation, "__args__", None):
            inner = [a for a in annotation.__args__ if isinstance(a, type) and issubclass(a, BaseModel)]  # type: ignore[union-attr]
            if inner:
                model = inner[0]
    return [field.alias or name for name, field in model.model_fields.items()]
