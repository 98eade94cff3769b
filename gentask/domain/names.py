"""One mapping between Python's snake_case field names and the resource's camelCase ones.

The resource follows the Kubernetes API conventions (`timeoutSeconds`, `responseFormat`), the REST
API and Python follow snake_case (`timeout_seconds`, `response_format`). Every model of
gentask.domain takes its aliases from `to_camel`; everything else that translates a name (the
REST API's messages, the CLI's `--param`) goes through `to_snake` and `to_camel` here.
"""

from __future__ import annotations

from functools import cache

# Where the conventions want an initialism kept in capitals (Kubernetes: `podIP`, `userID`).
_INITIALISMS = {"user_id": "userID", "provider_task_id": "providerTaskID", "vendor_task_id": "vendorTaskID"}


@cache
def to_camel(name: str) -> str:
    """`timeout_seconds` -> `timeoutSeconds`; `user_id` -> `userID` (the alias generator)."""
    if name in _INITIALISMS:
        return _INITIALISMS[name]
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@cache
def to_snake(name: str) -> str:
    """`timeoutSeconds` -> `timeout_seconds`; `userID` -> `user_id`; a snake_case name is returned as it is."""
    for snake, camel in _INITIALISMS.items():
        if name == camel:
            return snake
    out = []
    for ch in name:
        if ch.isupper():
            out.append("_" + ch.lower())
        else:
            out.append(ch)
    return "".join(out).lstrip("_")


def camel_words(text: str, names: list[str]) -> str:
    """`text` with each of the camelCase `names` it mentions said the snake_case way (for the REST API)."""
    for name in sorted(names, key=len, reverse=True):
        snake = to_snake(name)
        if snake != name:
            text = text.replace(name, snake)
    return text
