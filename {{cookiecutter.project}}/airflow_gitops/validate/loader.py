"""Parse YAML and JSON files into plain Python data plus the line and column of every node.

ruamel.yaml composes the node tree (JSON is parsed as YAML, so it gets positions too); the
tree is turned into dicts, lists and scalars here rather than by ruamel's constructor, so that
a duplicate key becomes a finding at its position instead of an exception, and so that every
key and value keeps its place for the messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from airflow_gitops.validate.findings import Finding

Path_ = tuple  # a path into a document: keys and list indexes
Position = tuple  # (line, col), 1-based

# Plain scalars that YAML 1.2 (ruamel, Airflow) reads as strings but YAML 1.1 (helm's and
# kubectl's Go parser) reads as booleans: the same file means two things.
YAML11_BOOLEANS = {"y", "yes", "n", "no", "on", "off"}

_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"

# Limits that keep a hostile file from hanging or crashing `validate` (each is one finding).
# Nesting: libyaml's composer recurses in C (a 100,000-deep file crashes the process) and
# json.loads in Python; no real values file or manifest nests near 64 levels.
MAX_DEPTH = 64
# Values that YAML aliases add beyond the file's own (a "billion laughs" file expands to 10^9).
ALIAS_BUDGET = 50_000
# YAML documents in one file: 25,000 tiny ones fit in 2 MiB and take seconds to check.
MAX_DOCUMENTS = 1_000


class _OverBudget(Exception):
    """Alias expansion went past ALIAS_BUDGET; carries the position of the alias."""

    def __init__(self, position: tuple) -> None:
        super().__init__(position)
        self.position = position


@dataclass
class Document:
    """One YAML document (or one JSON file): its data and where each part of it is."""

    path: str
    index: int
    data: Any
    positions: dict = field(default_factory=dict)  # path -> (line, col) of the value
    key_positions: dict = field(default_factory=dict)  # path -> (line, col) of the key

    def pos(self, path: Path_ = ()) -> Position:
        """The value's position, or the nearest enclosing one that is known."""
        path = tuple(path)
        while path and path not in self.positions:
            path = path[:-1]
        return self.positions.get(path, (1, 1))

    def key_pos(self, path: Path_) -> Position:
        """Where the key of ``path`` is written (the value's place for list items)."""
        path = tuple(path)
        return self.key_positions.get(path) or self.pos(path)

    def finding(self, path: Path_, message: str, rule: str, at_key: bool = False) -> Finding:
        """A finding at ``path``: a scalar at its value, a mapping or list at its key."""
        at_key = at_key or isinstance(self.get(*path), (dict, list))
        line, col = self.key_pos(path) if at_key else self.pos(path)
        return Finding(self.path, line, col, message, rule)

    def get(self, *path: Any, default: Any = None) -> Any:
        node = self.data
        for part in path:
            if (
                isinstance(node, dict)
                and part in node
                or isinstance(node, list)
                and isinstance(part, int)
                and -len(node) <= part < len(node)
            ):
                node = node[part]
            else:
                return default
        return node


@dataclass
class ParsedFile:
    path: str
    documents: list
    findings: list
    broken: bool  # not parseable: cross-file rules cannot trust what is missing from it


def _compose_all(text: str):
    """The node tree of each document in ``text``.

    libyaml (ruamel.yaml.clib) scans and parses when it is installed, pure Python otherwise.
    Either way the resolver is ruamel's BaseResolver: plain scalars are typed by ``_plain``
    below (YAML 1.2 core schema), once, instead of by ruamel's versioned resolver per node.
    """
    try:
        from ruamel.yaml.cyaml import CBaseLoader
    except ImportError:  # no C extension: ruamel's own parser, same nodes, slower
        from ruamel.yaml import YAML

        yaml = YAML(typ="safe", pure=True)
        yaml.Resolver = _tags_only_resolver()
        yield from yaml.compose_all(text)
        return
    loader = CBaseLoader(text)
    try:
        while loader.check_node():
            yield loader.get_node()
    finally:
        loader.dispose()


def _tags_only_resolver():
    """ruamel's resolver with implicit typing switched off, like BaseResolver (for the pure parser)."""
    from ruamel.yaml.resolver import VersionedResolver

    class TagsOnlyResolver(VersionedResolver):
        @property
        def versioned_resolver(self):
            return {}  # no implicit resolvers: every plain scalar is a string, typed by _plain()

    return TagsOnlyResolver


_STR = "tag:yaml.org,2002:str"
_PLAIN_INT = re.compile(r"^[-+]?[0-9]+$|^0o[0-7]+$|^0x[0-9a-fA-F]+$")
_PLAIN_FLOAT = re.compile(
    r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$|^[-+]?\.(inf|Inf|INF)$|^\.(nan|NaN|NAN)$"
)


def _plain(value: str) -> str:
    """The YAML 1.2 core schema tag of a plain (unquoted) scalar."""
    if value in ("", "~", "null", "Null", "NULL"):
        return _NULL
    if value in ("true", "True", "TRUE", "false", "False", "FALSE"):
        return _BOOL
    first = value[0]
    if first.isdigit() or first in "+-.":
        if _PLAIN_INT.match(value):
            return _INT
        if _PLAIN_FLOAT.match(value):
            return _FLOAT
    return _STR


_BRACKETS = re.compile(r"[\[\]{}]")


def _too_deep(text: str) -> Position | None:
    """Where ``text`` nests deeper than MAX_DEPTH, found before anything recurses on it.

    A cheap bound first: flow nesting needs unbalanced brackets, block nesting needs
    indentation (each level moves at least one column). Only a file past that bound is walked
    exactly, through libyaml's event stream (a state machine, no recursion).
    """
    depth = peak = 0
    for match in _BRACKETS.finditer(text):
        depth = depth + 1 if match.group() in "[{" else max(depth - 1, 0)
        peak = max(peak, depth)
    indent = max((len(line) - len(line.lstrip(" -?:\t")) for line in text.splitlines()), default=0)
    if peak <= MAX_DEPTH and indent <= MAX_DEPTH:
        return None
    try:
        from ruamel.yaml.cyaml import CBaseLoader
    except (
        ImportError
    ):  # pragma: no cover - the pure parser recurses in Python: RecursionError is caught
        return None
    loader = CBaseLoader(text)
    depth = 0
    try:
        while loader.check_event():
            event = loader.get_event()
            name = type(event).__name__
            if name in ("MappingStartEvent", "SequenceStartEvent"):
                depth += 1
                if depth > MAX_DEPTH:
                    return event.start_mark.line + 1, event.start_mark.column + 1
            elif name in ("MappingEndEvent", "SequenceEndEvent"):
                depth -= 1
    except Exception:  # noqa: BLE001 - a syntax error: the real parse below reports it at its place
        return None
    finally:
        loader.dispose()
    return None


def self_mark(node) -> Position:
    """Where a composed node starts (1-based); an empty document starts nowhere: (1, 1)."""
    return (node.start_mark.line + 1, node.start_mark.column + 1) if node is not None else (1, 1)


def parse_text(path: str, text: str, yaml11_checks: bool = False) -> ParsedFile:
    """Every document of ``text``; syntax errors and duplicate keys become findings."""
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    deep = _too_deep(text)
    if deep:
        message = f"nested deeper than {MAX_DEPTH} levels; not read further (no real file nests this deep)"
        return ParsedFile(path, [], [Finding(path, *deep, message, "yaml-too-deep")], True)
    if path.endswith(".json"):
        # YAML accepts more than JSON (trailing commas, comments, single quotes); AWS does not.
        import json

        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            message = f"not valid JSON: {exc.msg}"
            return ParsedFile(
                path, [], [Finding(path, exc.lineno, exc.colno, message, "syntax")], True
            )

    documents: list[Document] = []
    findings: list[Finding] = []
    broken = False
    try:
        expanded = [0]  # one alias budget for the whole file, however many documents
        for index, node in enumerate(_compose_all(text)):
            if index >= MAX_DOCUMENTS:
                line, col = self_mark(node)
                message = f"more than {MAX_DOCUMENTS:,} YAML documents in one file; not read further (split the file)"
                findings.append(Finding(path, line, col, message, "file-too-large"))
                broken = True
                break
            builder = _Builder(path, index, yaml11_checks, expanded)
            data = builder.build(node, ())
            if data is None and node is None:
                continue
            documents.append(Document(path, index, data, builder.positions, builder.key_positions))
            findings.extend(builder.findings)
    except _OverBudget as exc:
        message = (
            f"aliases of the anchor here expand to more than {ALIAS_BUDGET:,} values (a "
            "'billion laughs' file?); not read further"
        )
        findings.append(Finding(path, *exc.position, message, "yaml-alias-budget"))
        broken = True
    except RecursionError:  # only reachable without libyaml: the pure parser recurses in Python
        findings.append(
            Finding(
                path,
                1,
                1,
                f"nested deeper than {MAX_DEPTH} levels; not read further",
                "yaml-too-deep",
            )
        )
        broken = True
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        findings.append(Finding(path, line, col, f"not valid YAML/JSON: {problem}", "syntax"))
        broken = True
    except YAMLError as exc:  # e.g. a reader error: bytes that are not text
        findings.append(Finding(path, 1, 1, f"not valid YAML/JSON: {exc}", "syntax"))
        broken = True
    return ParsedFile(path, documents, findings, broken)


class _Builder:
    """Node tree -> plain data, recording positions and duplicate keys on the way."""

    def __init__(
        self, path: str, index: int, yaml11_checks: bool, expanded: list | None = None
    ) -> None:
        self.path = path
        self.index = index
        self.yaml11_checks = yaml11_checks
        self.positions: dict = {}
        self.key_positions: dict = {}
        self.findings: list[Finding] = []
        self._depth = 0
        self._seen: set = set()  # ids of collection nodes built once: seen again = an alias
        self._expanding = 0  # > 0 while building an alias's repeat
        self._expanded = (
            expanded if expanded is not None else [0]
        )  # alias repeats built, whole file

    @staticmethod
    def _mark(node) -> Position:
        return node.start_mark.line + 1, node.start_mark.column + 1

    def build(self, node, path: Path_) -> Any:
        if node is None:
            return None
        self.positions.setdefault(path, self._mark(node))
        kind = node.id
        if kind == "scalar":
            return self._scalar(node, path)
        repeat = id(node) in self._seen
        self._seen.add(id(node))
        self._depth += 1
        self._expanding += repeat
        try:
            if self._depth > MAX_DEPTH:  # aliases nesting an anchor in itself, many times over
                self.findings.append(
                    Finding(
                        self.path,
                        *self._mark(node),
                        f"nested deeper than {MAX_DEPTH} levels",
                        "yaml-too-deep",
                    )
                )
                return None
            if self._expanding:
                self._expanded[0] += len(node.value)
                if self._expanded[0] > ALIAS_BUDGET:
                    raise _OverBudget(self._mark(node))
            if kind == "sequence":
                return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
            return self._mapping(node, path)
        finally:
            self._depth -= 1
            self._expanding -= repeat

    def _mapping(self, node, path: Path_) -> dict:
        result: dict = {}
        seen: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE or (
                key_node.id == "scalar" and key_node.value == "<<" and not key_node.style
            ):  # `<<: *anchor`: the anchored keys, ours win
                merged = self.build(value_node, path)
                for source in merged if isinstance(merged, list) else [merged]:
                    if isinstance(source, dict):
                        for k, v in source.items():
                            result.setdefault(k, v)
                continue
            key = self._key(key_node)
            key_path = path + (key,)
            if key in seen:
                first_line = seen[key][0]
                self.findings.append(
                    Finding(
                        self.path,
                        *self._mark(key_node),
                        f"duplicate key {key!r} (first at line {first_line}); "
                        "helm and kubectl refuse the file",
                        "duplicate-key",
                    )
                )
                # The later value wins, as in most parsers; its positions replace the first.
                for old in [p for p in self.positions if p[: len(key_path)] == key_path]:
                    del self.positions[old]
            seen[key] = self._mark(key_node)
            self.key_positions[key_path] = seen[key]
            result[key] = self.build(value_node, key_path)
        return result

    def _key(self, node) -> Any:
        if node.id == "scalar":
            value = self._scalar(node, None)
            return (
                value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
            )
        # A mapping or list used as a key: legal YAML, never meaningful here.
        self.findings.append(
            Finding(self.path, *self._mark(node), "a key must be a plain value", "syntax")
        )
        return f"<complex key at line {self._mark(node)[0]}>"

    def _scalar(self, node, path) -> Any:
        tag, value = node.tag, node.value
        if tag == _STR and not node.style:  # plain: typed like YAML 1.2 (quoted stays a string)
            tag = _plain(value)
        if tag == _NULL:
            return None
        if tag == _BOOL:
            return value.lower() == "true"
        if tag == _INT:
            text = value.replace("_", "")
            try:
                return int(text, 0) if text.lower().startswith(("0x", "0o")) else int(text)
            except ValueError:
                return value
        if tag == _FLOAT:
            text = value.lower().replace("_", "")
            if text.endswith("inf"):
                return float("-inf") if text.startswith("-") else float("inf")
            if text.endswith("nan"):
                return float("nan")
            try:
                return float(text)
            except ValueError:
                return value
        if (
            self.yaml11_checks
            and path is not None
            and not node.style  # plain: None (pure Python parser) or "" (libyaml)
            and value.lower() in YAML11_BOOLEANS
        ):
            self.findings.append(
                Finding(
                    self.path,
                    *self._mark(node),
                    f"unquoted {value!r} is a string here but a boolean to helm/kubectl "
                    f"(YAML 1.1); write {'true' if value.lower() in ('y', 'yes', 'on') else 'false'} "
                    f"or quote it",
                    "yaml-ambiguous-bool",
                )
            )
        return value
