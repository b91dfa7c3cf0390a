"""One render layer: result data -> FreeBSD text, JSON or YAML.

Text renderers live with their command (they are FreeBSD formats); this module
turns the same result data into one machine document whose top-level key is the
command's name, built with json/yaml and never through rich.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ktls_cli.env import Env


def document(env: Env, command: str, data: Any) -> None:
    """Write `{command: data}` as JSON or YAML on stdout."""
    doc = {command: data}
    if env.format == "yaml":
        import yaml

        env.stdout.write(yaml.dump(doc, Dumper=_yaml_dumper(), sort_keys=False,
                                   default_flow_style=False))  # fmt: skip
    elif env.pretty:
        env.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        env.stdout.write(json.dumps(doc, separators=(",", ":")) + "\n")


def _yaml_dumper() -> Any:
    """yaml's SafeDumper, with int subclasses (an Errno) written as the ints they are,
    as json writes them (bool keeps its own representer: exact types come first)."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_multi_representer(int, lambda d, v: d.represent_int(int(v)))
    return Dumper


def emit(env: Env, command: str, data: Any, text: Callable[[], None]) -> None:
    """Machine formats get the document; text output is the command's own renderer."""
    if env.machine:
        document(env, command, data)
    else:
        text()


def warn(env: Env, tool: str, message: str) -> None:
    """A diagnostic as FreeBSD's warnx() prints it: `tool: message` on stderr."""
    env.err(f"{tool}: {message}")
