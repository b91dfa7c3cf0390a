"""One render layer: result data -> FreeBSD text, JSON or YAML.

Text renderers live with their command (they are FreeBSD formats); this module
turns the same result data into one machine document whose top-level key is the
command's name, built with json/yaml and never through rich.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ktls_cli.env import Env


def document(env: Env, command: str, data: Any) -> None:
    """Write `{command: data}` as JSON or YAML on stdout."""
    env.stdout.write(_text(env, {command: data}))


def _text(env: Env, doc: Any) -> str:
    import json  # only documents need it: ~1 ms a text command does not spend

    if env.format == "yaml":
        import yaml

        return str(yaml.dump(doc, Dumper=_yaml_dumper(), sort_keys=False,
                             default_flow_style=False))  # fmt: skip
    if env.pretty:
        return json.dumps(doc, indent=2) + "\n"
    return json.dumps(doc, separators=(",", ":")) + "\n"


_DUMPER: Any = None


def _yaml_dumper() -> Any:
    """yaml's SafeDumper, with int subclasses (an Errno) written as the ints they are,
    as json writes them (bool keeps its own representer: exact types come first)."""
    global _DUMPER
    if _DUMPER is None:
        import yaml

        class Dumper(yaml.SafeDumper):
            pass

        Dumper.add_multi_representer(int, lambda d, v: d.represent_int(int(v)))
        _DUMPER = Dumper
    return _DUMPER


def _pretty_item(data: Any) -> str:
    """json.dumps(data, indent=2); a flat mapping without the pure-Python encoder, whose
    closures are reference cycles that pile up between collections of a long send."""
    import json  # only documents need it: ~1 ms a text command does not spend

    if not isinstance(data, dict) or not data or any(
        isinstance(v, dict | list | tuple) for v in data.values()
    ):
        return json.dumps(data, indent=2)
    lines = ",\n".join(f"  {json.dumps(str(k))}: {json.dumps(v)}" for k, v in data.items())
    return "{\n" + lines + "\n}"


class DocumentStream:
    """`{command: {key: [item, ...], **fields}}` written item by item, so a long send or
    decode never holds its records: the same bytes document() writes for the whole
    document, in every format. `key` is the document's first field; `finish()` writes
    the fields after it (call it on failure too, with the error)."""

    def __init__(self, env: Env, command: str, key: str) -> None:
        self.env = env
        self.command = command
        self.key = key
        self.count = 0
        if env.format == "yaml":
            head = f"{command}:\n"
        elif env.pretty:
            head = f'{{\n  "{command}": {{\n    "{key}": ['
        else:
            head = f'{{"{command}":{{"{key}":['
        env.stdout.write(head)

    def item(self, data: Any) -> None:
        env = self.env
        if env.format == "yaml":
            import yaml

            text = yaml.dump([data], Dumper=_yaml_dumper(), sort_keys=False,
                             default_flow_style=False)  # fmt: skip
            lead = "" if self.count else f"  {self.key}:\n"
            env.stdout.write(lead + "".join("  " + ln for ln in text.splitlines(True)))
        elif env.pretty:
            text = _pretty_item(data).replace("\n", "\n      ")
            env.stdout.write(("," if self.count else "") + "\n      " + text)
        else:
            import json  # only documents need it: ~1 ms a text command does not spend

            env.stdout.write(("," if self.count else "") + json.dumps(data, separators=(",", ":")))
        self.count += 1

    def finish(self, fields: dict[str, Any]) -> None:
        env = self.env
        whole = _text(env, {self.command: {self.key: [], **fields}})
        if env.format == "yaml":
            marker = f"  {self.key}: []\n"
            close = "" if self.count else marker
        elif env.pretty:
            marker = f'"{self.key}": []'
            close = "\n    ]" if self.count else "]"
        else:
            marker = f'"{self.key}":[]'
            close = "]"
        env.stdout.write(close + whole[whole.index(marker) + len(marker) :])


def emit(env: Env, command: str, data: Any, text: Callable[[], None]) -> None:
    """Machine formats get the document; text output is the command's own renderer."""
    if env.machine:
        document(env, command, data)
    else:
        text()


def warn(env: Env, tool: str, message: str) -> None:
    """A diagnostic as FreeBSD's warnx() prints it: `tool: message` on stderr."""
    env.err(f"{tool}: {message}")
