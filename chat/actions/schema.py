"""An action's `parameters`: a JSON Schema of the arguments, checked as a schema when the
action is saved, and the arguments of each call checked against it (jsonschema)."""

import re
from collections.abc import Iterator

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for
from referencing.exceptions import Unresolvable

from chat.actions.placeholders import NAME

_NAME = re.compile(NAME)
# `{customer.id}` is the product's, never an argument's: no parameter may take the name.
RESERVED = frozenset({"customer"})
# Reasons listed for one call's arguments; the model needs the first few, not all.
MAX_ERRORS_LISTED = 5


def problems(schema: object) -> list[str]:
    """What keeps `schema` from describing an action's arguments, as sentences."""
    if not isinstance(schema, dict):
        return ['must be a JSON Schema object, e.g. {"type": "object", "properties": {...}}']
    try:
        _validator_class(schema).check_schema(schema)
    except SchemaError as exc:
        where = exc.json_path if exc.json_path != "$" else "the schema"
        return [f"is not a valid JSON Schema: {exc.message} (at {where})"]
    found = []
    if schema.get("type") != "object":
        found.append('must describe an object: "type": "object" (arguments are named)')
    properties = schema.get("properties", {})
    for name in properties:
        if not _NAME.fullmatch(name):
            found.append(f"parameter {name!r}: a name is letters, digits and _ (not first a digit)")
        elif name in RESERVED:
            found.append(
                f"parameter {name!r} is reserved: the customer's id comes from the product, "
                "as {customer.id}"
            )
    missing = [name for name in schema.get("required", []) if name not in properties]
    if missing:
        found.append(f"required names no parameter under properties: {', '.join(missing)}")
    remote = sorted(set(_remote_refs(schema)))
    if remote:
        found.append(f"$ref may point only inside the schema (#/...), not to {', '.join(remote)}")
    return found


def property_names(schema: object) -> set[str]:
    if isinstance(schema, dict) and isinstance(schema.get("properties"), dict):
        return set(schema["properties"])
    return set()


def required_names(schema: object) -> set[str]:
    if isinstance(schema, dict) and isinstance(schema.get("required"), list):
        return {name for name in schema["required"] if isinstance(name, str)}
    return set()


def property_type(schema: object, name: str) -> object:
    """The declared "type" of one parameter (a string, a list of them, or None)."""
    if isinstance(schema, dict) and isinstance(schema.get("properties"), dict):
        declared = schema["properties"].get(name)
        if isinstance(declared, dict):
            return declared.get("type")
    return None


def validated(schema: dict, arguments: object) -> tuple[dict, list[str]]:
    """(the arguments to use, what is wrong with them). Arguments the schema does not name
    are dropped, never sent on: only declared parameters leave the desk."""
    if not isinstance(arguments, dict):
        return {}, ["the arguments must be a JSON object of named parameters"]
    declared = property_names(schema)
    kept = {name: value for name, value in arguments.items() if name in declared}
    cls = _validator_class(schema)
    try:
        errors = sorted(
            cls(schema, format_checker=cls.FORMAT_CHECKER).iter_errors(kept),
            key=lambda e: [str(part) for part in e.absolute_path],
        )
    except (SchemaError, Unresolvable) as exc:  # saved without the checks above
        return {}, [f"the action's parameters are not a usable schema ({exc})"]
    reasons = [
        f"{'.'.join(str(p) for p in error.absolute_path) or 'arguments'}: {error.message}"
        for error in errors[:MAX_ERRORS_LISTED]
    ]
    if len(errors) > MAX_ERRORS_LISTED:
        reasons.append(f"and {len(errors) - MAX_ERRORS_LISTED} more")
    return kept, reasons


def value_is_valid(schema: object, name: str, value: object) -> bool:
    """Whether `value` fits parameter `name` (a trigger's match, before it is used). Checked
    inside the whole schema, so a `$ref` to its `$defs` resolves; other parameters it may
    require are the caller's to add."""
    if not isinstance(schema, dict) or name not in property_names(schema):
        return False
    cls = _validator_class(schema)
    try:
        errors = cls(schema, format_checker=cls.FORMAT_CHECKER).iter_errors({name: value})
        return not any(list(error.absolute_path)[:1] == [name] for error in errors)
    except (SchemaError, Unresolvable):
        return False


def _validator_class(schema: dict):
    # The draft the schema names in "$schema", else 2020-12 (what OpenAI-style tools use).
    return validator_for(schema, default=Draft202012Validator)


def _remote_refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and not value.startswith("#"):
                yield value
            else:
                yield from _remote_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _remote_refs(item)
