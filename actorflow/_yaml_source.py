"""Reading configuration files in YAML with the line of every node (internal).

Flow files (:mod:`actorflow.flowfile`) and fault plan files (:mod:`actorflow.fault_files`)
are read the same way: the file is composed into a node tree by ``yaml.SafeLoader`` (nothing
in it is evaluated), and a :class:`Reader` walks that tree, turning nodes into values and every
mistake into a :class:`SourceFileError` of the file's own kind, ``file:line: problem``, with the
line of the node at fault. :func:`read_source` does the reading and the YAML errors;
:func:`import_attribute` and :func:`exception_class` resolve the ``module:Name`` and builtin
exception names such files may hold.
"""

from __future__ import annotations

import builtins
import difflib
import importlib
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from actorflow.errors import ActorflowError, ConfigurationError

__all__ = [
    "Entry",
    "Reader",
    "SourceFileError",
    "builtin_exception_names",
    "did_you_mean",
    "exception_class",
    "import_attribute",
    "kind_of",
    "line_of",
    "read_source",
    "search_first",
]

T = TypeVar("T")


class SourceFileError(ConfigurationError):
    """A configuration file that cannot be loaded: ``file:line: problem``.

    Attributes ``filename``, ``line`` (1-based; None when the file could not be read) and
    ``problem`` hold the parts of the message.
    """

    def __init__(self, filename: str, line: int | None, problem: str) -> None:
        self.filename = filename
        self.line = line
        self.problem = problem
        where = filename if line is None else f"{filename}:{line}"
        super().__init__(f"{where}: {problem}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.filename, self.line, self.problem))


@dataclass(frozen=True)
class Entry:
    """One ``key: value`` of a mapping, with the nodes that carry their line numbers."""

    key: str
    key_node: Any
    node: Any


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``"did you mean 'x'? "`` for the choice closest to ``name``, or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def line_of(node: Any) -> int:
    """The 1-based line a YAML node starts on."""
    return int(node.start_mark.line) + 1


def kind_of(value: Any) -> str:
    """What a value is, for a message: ``a mapping``, ``a list``, ``nothing``, ``a float``."""
    if value is None:
        return "nothing"
    name = type(value).__name__
    article = "an" if name[:1].lower() in "aeiou" else "a"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), f"{article} {name}"
    )


class Reader:
    """Walks the composed YAML document, turning nodes into values and errors into lines."""

    def __init__(self, filename: str, loader: Any, error_type: type[SourceFileError]) -> None:
        self.filename = filename
        self.loader = loader
        self.error_type = error_type

    def error(self, node: Any, problem: str) -> SourceFileError:
        """The error for ``problem`` at ``node``'s line (no line when ``node`` is None)."""
        return self.error_type(self.filename, None if node is None else line_of(node), problem)

    def value(self, node: Any) -> Any:
        """The Python value of a node (SafeLoader types only)."""
        return self.loader.construct_object(node, deep=True)

    def mapping(self, node: Any, what: str, allowed: tuple[str, ...]) -> dict[str, Entry]:
        """The entries of a mapping node; unknown (when ``allowed`` is not empty), duplicate or
        non-string keys are errors."""
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what} must be a mapping, not {kind_of(self.value(node))}")
        entries: dict[str, Entry] = {}
        for key_node, value_node in node.value:
            key = self.value(key_node)
            if not isinstance(key_node, yaml.ScalarNode) or not isinstance(key, str):
                raise self.error(key_node, f"{what}: keys must be strings, not {kind_of(key)}")
            if key in entries:
                first = line_of(entries[key].key_node)
                raise self.error(key_node, f"{what}: duplicate key {key!r} (first on line {first})")
            if allowed and key not in allowed:
                raise self.error(
                    key_node,
                    f"{what}: unknown key {key!r} ({did_you_mean(key, allowed)}"
                    f"valid keys: {', '.join(allowed)})",
                )
            entries[key] = Entry(key, key_node, value_node)
        return entries

    def string(self, entry: Entry, what: str) -> str:
        """The entry's value, which must be a non-empty string."""
        value = self.value(entry.node)
        if not isinstance(value, str) or not value.strip():
            raise self.error(entry.node, f"{what} must be a non-empty string, not {kind_of(value)}")
        return value


def read_source(
    path: Path, what: str, error_type: type[SourceFileError], build: Callable[[Reader, Any], T]
) -> T:
    """Compose the YAML (or JSON) file at ``path`` and return ``build(reader, root)``.

    ``root`` is the document's node (None for an empty file). Every problem becomes an
    ``error_type``: a file that cannot be read (no line; ``what`` names the file in the
    message), a YAML syntax error, a value that cannot be constructed, and an
    :class:`~actorflow.errors.ActorflowError` that ``build`` lets out (at the document's line).
    """
    filename = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error_type(filename, None, f"cannot read {what} ({exc})") from None
    if path.suffix.lower() == ".json":
        # JSON allows tabs between tokens, YAML does not; a JSON string holds no raw tab.
        text = text.replace("\t", " ")
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = None if mark is None else int(mark.line) + 1
            problem = exc.problem or "invalid YAML"
            if exc.context:
                context_mark = exc.context_mark
                where = "" if context_mark is None else f", line {int(context_mark.line) + 1}"
                problem += f" ({exc.context}{where})"
            raise error_type(filename, line, f"YAML syntax error: {problem}") from None
        except yaml.YAMLError as exc:
            raise error_type(filename, 1, f"YAML syntax error: {exc}") from None
        try:
            return build(Reader(filename, loader, error_type), root)
        except yaml.YAMLError as exc:  # a value that cannot be constructed (e.g. a bad tag)
            mark = getattr(exc, "problem_mark", None)
            line = None if mark is None else int(mark.line) + 1
            raise error_type(filename, line, f"YAML error: {exc}") from None
        except SourceFileError:
            raise
        except ActorflowError as exc:
            line = 1 if root is None else line_of(root)
            raise error_type(filename, line, str(exc)) from None
    finally:
        loader.dispose()


@contextmanager
def search_first(directory: Path) -> Iterator[None]:
    """Put ``directory`` at the front of ``sys.path`` while the block runs."""
    entry = str(directory)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with suppress(ValueError):
            sys.path.remove(entry)


def import_attribute(spec: str) -> tuple[Any, str]:
    """Import ``module:Name`` (or ``module.Name``); returns the object and a problem or ''."""
    module_name, sep, name = spec.partition(":")
    if not sep:
        module_name, _, name = spec.rpartition(".")
    if not module_name or not name or ":" in name:
        return None, f"class {spec!r} is not of the form module:Class"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        return None, f"cannot import module {module_name!r} for class {spec!r} ({exc})"
    except Exception as exc:
        return None, (
            f"importing module {module_name!r} for class {spec!r} raised "
            f"{type(exc).__name__}: {exc}"
        )
    target: Any = module
    for part in name.split("."):
        if not hasattr(target, part):
            return None, f"module {module_name!r} has no class {name!r} (class {spec!r})"
        target = getattr(target, part)
    return target, ""


def builtin_exception_names() -> list[str]:
    """The names of the builtin ``Exception`` subclasses."""
    return sorted(
        name
        for name, value in vars(builtins).items()
        if isinstance(value, type) and issubclass(value, Exception)
    )


def exception_class(name: str, directory: Path) -> tuple[type[Exception] | None, str]:
    """Resolve an exception name: a builtin one (``ValueError``), or ``module:Name`` (or
    ``module.Name``) imported while ``directory`` is first on ``sys.path``. Returns the class
    and ``''``, or None and the problem."""
    if ":" in name or "." in name:
        with search_first(directory):
            found, problem = import_attribute(name)
    else:
        found = getattr(builtins, name, None)
        problem = "" if found is not None else f"no builtin exception {name!r}"
    if problem:
        return None, problem
    if not (isinstance(found, type) and issubclass(found, Exception)):
        return None, f"{name!r} is not an Exception subclass"
    return found, ""
