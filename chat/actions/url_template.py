"""An action's `url`: a template whose scheme, host and port are fixed, with `{parameter}` and
`{customer.id}` placeholders in its path and query.

Every value is percent-encoded with nothing left safe (`/`, `?`, `#`, `&`, `=`, `@`, `:` all
encoded), so an argument such as `../admin?x=1#` or `evil.example/` stays inside its own path
segment or query value: it can change neither the host, nor the path's segments, nor the
query's structure. A path value that is empty, `.` or `..` is refused, since HTTP clients and
servers collapse such segments (`/orders/..` is `/`). `{customer.id}` is filled from the
verified customer's id the product passes, never from the arguments.
"""

from urllib.parse import SplitResult, quote, urlsplit

from django.conf import settings

from chat.actions import placeholders, schema

CUSTOMER_ID = "customer.id"
SCHEMES = ("http", "https")
_DEFAULT_PORTS = {"http": 80, "https": 443}
SCALAR_TYPES = frozenset({"string", "integer", "number", "boolean"})
_COLLAPSED = frozenset({"", ".", ".."})


class RenderError(ValueError):
    """The URL cannot be built from these arguments: the call is refused."""


class HostNotAllowed(RenderError):
    """The URL's host is not in ACTIONS_ALLOWED_HOSTS."""


def problems(template: str, *, parameters: object, audience: str) -> list[str]:
    """What is wrong with a URL template, as sentences (`audience`: "verified" or "public")."""
    if not template:
        return ["is required, e.g. https://api.example.com/orders/{order_id}"]
    if "${" in template:
        return [
            "cannot read the environment: ${NAME} works in headers only (put a secret in a "
            "header, never in the URL)"
        ]
    found = placeholders.problems(template)
    try:
        parts = urlsplit(template)
        parts.port  # noqa: B018  (raises ValueError for a port that is no number)
    except ValueError as exc:
        return [*found, f"is not a URL ({exc})"]
    if parts.scheme not in SCHEMES:
        found.append("must start with http:// or https://")
    if not parts.hostname:
        found.append("names no host")
    if "{" in parts.netloc or "}" in parts.netloc:
        found.append("cannot have placeholders in its host or port: the template fixes them")
    if "@" in parts.netloc:
        found.append(
            "cannot hold a user name or password (it would be stored): send credentials in a "
            "header read from the environment, e.g. Authorization: Bearer ${API_TOKEN}"
        )
    if "#" in template:
        found.append("cannot have a #fragment")
    declared = schema.property_names(parameters)
    required = schema.required_names(parameters)
    for name in placeholders.names(template):
        if name == CUSTOMER_ID:
            if audience != "verified":
                found.append(
                    "{customer.id} needs audience verified: a public action has no customer id"
                )
        elif name not in declared:
            found.append(f"{{{name}}} names no parameter (see parameters.properties)")
        elif name not in required:
            found.append(f"{{{name}}} must be a required parameter (list it in required)")
        elif not _scalar(schema.property_type(parameters, name)):
            found.append(
                f"{{{name}}} must be a string, integer, number or boolean parameter to go "
                "into a URL"
            )
    if parts.hostname and not host_allowed(parts):
        found.append(
            f"host {parts.hostname} is not in ACTIONS_ALLOWED_HOSTS "
            f"({', '.join(settings.ACTIONS['ALLOWED_HOSTS'])})"
        )
    return found


def render(template: str, arguments: dict, *, customer_id: str | None) -> str:
    """The URL to call; RenderError when a value is missing or would change the path."""
    head, separator, query = template.partition("?")

    def value(name: str, *, in_path: bool) -> str:
        if name == CUSTOMER_ID:
            if not customer_id:
                raise RenderError("this action needs the verified customer's id")
            raw: object = customer_id
        elif name in arguments:
            raw = arguments[name]
        else:
            raise RenderError(f"argument {name} is missing")
        text = _as_text(name, raw)
        if in_path and text in _COLLAPSED:
            raise RenderError(f"{name}: {text!r} cannot be a part of the path")
        return quote(text, safe="")

    url = placeholders.fill(head, lambda name: value(name, in_path=True))
    if separator:
        url += "?" + placeholders.fill(query, lambda name: value(name, in_path=False))
    expected, final = urlsplit(template), urlsplit(url)
    # The encoding above makes these equal; checked again because it is the promise.
    if (final.scheme, final.netloc) != (expected.scheme, expected.netloc):
        raise RenderError("the URL would leave the template's host")
    if not host_allowed(final):
        raise HostNotAllowed(f"host {final.hostname} is not in ACTIONS_ALLOWED_HOSTS")
    return url


def host_allowed(parts: SplitResult) -> bool:
    """Whether ACTIONS_ALLOWED_HOSTS lets a call reach this URL's host and port. Empty, it
    does: the host is then the one the action's own template names (checked in `render`)."""
    allowed = settings.ACTIONS["ALLOWED_HOSTS"]
    if not allowed:
        return True
    host = (parts.hostname or "").lower()
    port = _port(parts)
    for entry in allowed:
        try:
            wanted = urlsplit("//" + entry.strip().lower())
            wanted_port = wanted.port
        except ValueError:
            continue
        if wanted.hostname == host and wanted_port in (None, port):
            return True
    return False


def host_of(template: str) -> str:
    """The template's host, for log lines: never its path or query (they hold arguments)."""
    try:
        return urlsplit(template).hostname or "-"
    except ValueError:
        return "-"


def _port(parts: SplitResult) -> int | None:
    try:
        return parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None


def _scalar(declared: object) -> bool:
    if isinstance(declared, str):
        return declared in SCALAR_TYPES
    if isinstance(declared, list):
        return bool(declared) and all(t in SCALAR_TYPES for t in declared)
    return False


def _as_text(name: str, value: object) -> str:
    if isinstance(value, bool):  # before int: True is an int
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise RenderError(f"{name}: a {type(value).__name__} cannot go into a URL")
