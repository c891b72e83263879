"""Component options, declared once: type, bounds, default and description in one place.

Each component class carries a nested ``Options`` model (pydantic v2, as llm's ``Options``)::

    class Dpo(selfdev.Optimizer):
        class Options(selfdev.Options):
            lr: float = selfdev.Field(5e-6, gt=0, le=1, description="learning rate")
            preset: Literal["auto", "tiny", "small"] = selfdev.Field("auto", description="...")

The engine validates a run's ``[optimizer]`` table against it before anything is built and
hands the component the validated model as ``self.options``; ``selfdev plugins --options``
lists it. This module turns pydantic's multi-line ``ValidationError`` into the one line that
every configuration error in selfdev is (:func:`explain`; ``engine.api.validate_options``
raises it as a ``ConfigError``), derives the "must be ..." phrase from the declaration itself (so
bounds are written once, in ``Field``), and describes options for the listing
(:func:`describe_model`). It imports nothing of selfdev: ``engine.api`` builds on it.

Validation is *strict*: TOML and JSON already give typed values, so ``"3"`` is not silently taken
as a number, ``1`` is not taken as ``true`` and ``3`` is not taken as a string. The one
conversion kept is the one TOML users expect: an integer where a number is expected
(``lr = 1`` is ``1.0``). Because strict mode takes values as the config file writes them,
declare paths as ``str`` and sequences as ``list``.
"""
from __future__ import annotations

import inspect
import types
import typing
from pathlib import PurePath
from typing import Any, Literal, Union

import annotated_types as at
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

__all__ = ["Options", "Field", "explain", "declared_options", "describe_model",
           "describe_parameter", "component_doc", "must_be"]


class Options(BaseModel):
    """The base of every component's options: unknown keys refused, values taken strictly.

    Cross-field rules go in a pydantic ``model_validator(mode="after")`` that raises
    ``ValueError("...")``; the user sees ``config: [<kind>] <message>``. A ``field_validator``
    that raises ``ValueError("must be ...")`` is shown as ``config: [<kind>] <key> must be ...;
    got <value>``. The model is frozen: it is the configuration as the run recorded it.
    """

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        protected_namespaces=(),  # option names such as ``model_path`` are fine
        use_attribute_docstrings=True,  # a docstring under a field is its description
    )


# --------------------------------------------------------------------------------------------
# which options a component takes


def declared_options(cls: type) -> type[Options]:
    """The ``Options`` model of a component class (the kind's empty one when it declares none)."""
    return getattr(cls, "Options", Options)


# --------------------------------------------------------------------------------------------
# validation with one-line errors


def explain(kind: str, name: str, model: type[Options], raw: dict[str, Any],
            exc: ValidationError) -> str:
    """The one line for a pydantic error: the first unknown key, else the first bad value.

    * unknown key: ``config: unknown option 'x' for optimizer 'dpo'; allowed: a, b, c``
    * bad value: ``config: [optimizer] lr must be a number in [0, 1]; got 'x'``
    * missing required option: ``config: [generator] hf needs model (<its description>)``
    * a cross-field rule: ``config: [optimizer] <the validator's message>``
    """
    errors = exc.errors(include_url=False)
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    if unknown:
        allowed = ", ".join(model.model_fields) or "(none)"
        key = unknown[0]["loc"][0]
        return f"config: unknown option {key!r} for {kind} {name!r}; allowed: {allowed}"
    err = errors[0]
    loc = err["loc"]
    custom = _custom_message(err)
    if not loc:  # a model_validator: a rule about several options
        return f"config: [{kind}] {custom or err['msg']}"
    key = str(loc[0])
    field = model.model_fields.get(key)
    if err["type"] == "missing":
        description = _declared(field, "description") if field is not None else None
        what = f" ({description})" if description else ""
        return f"config: [{kind}] {name} needs {key}{what}"
    got = raw.get(key) if isinstance(raw, dict) else raw
    if custom is None:  # a union reports each member; a validator's own words are the best
        custom = next((c for e in errors if e["loc"][:1] == loc[:1]
                       for c in [_custom_message(e)] if c is not None), None)
    shown = "" if field is not None and _declared(field, "hide_value") else f"; got {got!r}"
    if custom is not None:
        return f"config: [{kind}] {key} {custom}{shown}"
    phrase = must_be(field) if field is not None else err["msg"].lower()
    return f"config: [{kind}] {key} must be {phrase}{shown}"


def _custom_message(err: dict[str, Any]) -> str | None:
    """The message of a ``ValueError``/``AssertionError`` raised by a validator, if any."""
    if err["type"] in ("value_error", "assertion_error"):
        error = (err.get("ctx") or {}).get("error")
        if error is not None:
            return str(error)
    return None


# --------------------------------------------------------------------------------------------
# "must be ..." phrases from the declarations


_SINGULAR = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
_PLURAL = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}
_TYPE_NAMES = {int: "int", float: "float", str: "str", bool: "bool"}


def _unwrap(annotation: Any, metadata: list[Any]) -> tuple[Any, list[Any]]:
    """Strip ``Annotated[...]`` (collecting its constraints) and ``None`` from an annotation."""
    metadata = list(metadata)
    while typing.get_origin(annotation) is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        for item in extra:
            metadata.extend([item, *item.metadata] if isinstance(item, FieldInfo) else [item])
        annotation = base
    if _is_union(annotation):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0], metadata)
    return annotation, metadata


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType)


def _bounds(metadata: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in metadata:
        for attr in ("ge", "gt", "le", "lt", "min_length", "max_length"):
            value = getattr(item, attr, None)
            if value is not None and isinstance(item, (at.BaseMetadata, at.GroupedMetadata)):
                out[attr] = value
    return out


def _range(bounds: dict[str, Any]) -> str:
    lo = ("[", bounds["ge"]) if "ge" in bounds else ("(", bounds["gt"]) if "gt" in bounds else None
    hi = ("]", bounds["le"]) if "le" in bounds else (")", bounds["lt"]) if "lt" in bounds else None
    if lo and hi:
        return f"in {lo[0]}{lo[1]}, {hi[1]}{hi[0]}"
    if lo:
        return f"{'>=' if lo[0] == '[' else '>'} {lo[1]}"
    if hi:
        return f"{'<=' if hi[0] == ']' else '<'} {hi[1]}"
    return ""


def _phrase(annotation: Any, metadata: list[Any], plural: bool = False) -> str:
    annotation, metadata = _unwrap(annotation, metadata)
    bounds = _bounds(metadata)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if _is_union(annotation):
        members = [a for a in args if a is not type(None)]
        return " or ".join(_phrase(a, [], plural) for a in members)
    if origin is Literal:
        choices = ", ".join(repr(a) for a in args)
        return f"values among {choices}" if plural else f"one of {choices}"
    if origin in (list, tuple, set, frozenset) or annotation in (list, tuple, set):
        inner = _phrase(args[0], [], plural=True) if args else "values"
        size = ""
        if bounds.get("min_length") == 1 and "max_length" not in bounds:
            head = "non-empty lists" if plural else "a non-empty list"
            return f"{head} of {inner}"
        if "min_length" in bounds or "max_length" in bounds:
            size = f" with {_count(bounds)} items"
        return f"{'lists' if plural else 'a list'} of {inner}{size}"
    if origin is dict or annotation is dict:
        inner = _phrase(args[1], [], plural=True) if len(args) == 2 else "values"
        return f"{'tables' if plural else 'a table'} of {inner}"
    if isinstance(annotation, type) and issubclass(annotation, PurePath):
        base = "paths" if plural else "a path"
    elif annotation in _SINGULAR:
        base = (_PLURAL if plural else _SINGULAR)[annotation]
        if annotation is str and bounds.get("min_length") == 1 and "max_length" not in bounds:
            return "non-empty strings" if plural else "a non-empty string"
        if annotation is str and ("min_length" in bounds or "max_length" in bounds):
            return f"{base} of {_count(bounds)} characters"
        pattern = next((getattr(m, "pattern", None) for m in metadata
                        if getattr(m, "pattern", None)), None)
        if annotation is str and pattern:
            return f"{base} matching {pattern}"
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        base = "tables" if plural else "a table"
    else:
        base = "values" if plural else "a value"
    rng = _range(bounds)
    return f"{base} {rng}" if rng else base


def _count(bounds: dict[str, Any]) -> str:
    lo, hi = bounds.get("min_length"), bounds.get("max_length")
    if lo is not None and hi is not None:
        return f"{lo} to {hi}" if lo != hi else f"{lo}"
    return f"at least {lo}" if lo is not None else f"at most {hi}"


def _declared(field: FieldInfo, attr: str) -> Any:
    """``description`` or a ``json_schema_extra`` key of a field, also when it is declared on
    a reusable ``Annotated`` type inside ``Optional[...]`` (where pydantic does not lift it)."""
    infos = [field] + [m for m in _unwrap(field.annotation, field.metadata)[1]
                       if isinstance(m, FieldInfo)]
    for info in infos:
        if attr == "description":
            value = info.description
        else:
            extra = info.json_schema_extra
            value = extra.get(attr) if isinstance(extra, dict) else None
        if value:
            return value
    return None


def must_be(field: FieldInfo) -> str:
    """What a field accepts, in words: ``a number in [0, 1]``, ``one of 'a', 'b'``, ...

    A field whose values a validator converts (``chat_template = true`` -> ``"on"``) can say
    it itself: ``Field(json_schema_extra={"must_be": '"auto", true or false'})``. A field that
    a user might fill with a secret by mistake (the name of the variable holding an API key)
    sets ``json_schema_extra={"hide_value": True}``: its errors do not repeat the value.
    """
    return _declared(field, "must_be") or _phrase(field.annotation, field.metadata)


# --------------------------------------------------------------------------------------------
# describing options (``selfdev plugins --options``)


def _type_name(annotation: Any) -> str:
    annotation, _ = _unwrap(annotation, [])
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if _is_union(annotation):
        return " | ".join(_type_name(a) for a in args)
    if annotation is type(None):
        return "None"
    if origin is Literal:
        kinds = {type(a) for a in args}
        return _TYPE_NAMES.get(kinds.pop(), "value") if len(kinds) == 1 else "value"
    if origin in (list, tuple, set, frozenset):
        return f"list[{_type_name(args[0])}]" if args else "list"
    if origin is dict:
        return f"dict[{_type_name(args[0])}, {_type_name(args[1])}]" if len(args) == 2 else "dict"
    if isinstance(annotation, type) and issubclass(annotation, PurePath):
        return "path"
    if annotation in _TYPE_NAMES:
        return _TYPE_NAMES[annotation]
    return getattr(annotation, "__name__", str(annotation))


def _choices(annotation: Any) -> list[Any] | None:
    annotation, _ = _unwrap(annotation, [])
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))
    return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


def describe_model(model: type[Options]) -> list[dict[str, Any]]:
    """Each option of an ``Options`` model: name, type, default, required, bounds, choices,
    what it accepts (``must_be``) and description."""
    out = []
    for key, field in model.model_fields.items():
        required = field.is_required()
        default = None if required else field.get_default(call_default_factory=True)
        out.append({
            "name": key,
            "type": _type_name(field.annotation),
            "required": required,
            "default": _jsonable(default),
            "bounds": _bounds(_unwrap(field.annotation, field.metadata)[1]) or None,
            "choices": _choices(field.annotation),
            "must_be": must_be(field),
            "description": _declared(field, "description") or "",
        })
    return out


def describe_parameter(p: inspect.Parameter) -> dict[str, Any]:
    """An option of a component that predates declared options: a keyword argument of its
    ``__init__`` (type from the annotation or the default, no description)."""
    if p.kind is p.VAR_KEYWORD:
        return {"name": f"**{p.name}", "type": "any", "required": False, "default": None,
                "bounds": None, "choices": None, "must_be": "any value",
                "description": "any other option (not declared)"}
    annotation = p.annotation
    if isinstance(annotation, str):  # ``from __future__ import annotations``: show it as written
        type_name = annotation
    elif annotation is p.empty:
        type_name = "any" if p.default in (p.empty, None) else _type_name(type(p.default))
    else:
        type_name = _type_name(annotation)
    required = p.default is p.empty
    return {"name": p.name, "type": type_name, "required": required,
            "default": None if required else _jsonable(p.default), "bounds": None,
            "choices": None, "must_be": "", "description": ""}


def component_doc(cls: type) -> str:
    """The first paragraph of the component's own docstring (not one inherited from its kind)."""
    doc = cls.__dict__.get("__doc__")
    if not doc:
        return ""
    return inspect.cleandoc(doc).split("\n\n", 1)[0].replace("\n", " ").strip()
