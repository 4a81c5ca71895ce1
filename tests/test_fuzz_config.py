"""Fuzzing forge.toml: a broken configuration is a message naming file or key, never a traceback.

Documents are generated from the settings models themselves (every key of
every section, so a key added later is fuzzed too): valid TOML with values of
the wrong type, out of range, non-finite, too long or unset-interpolated for
each key; unknown sections and keys; sections that are no table; and TOML
broken as text (truncated, unbalanced, duplicated, control characters, BOM,
invalid UTF-8, nested past any stack). In process, `runtime._config.load` must
raise `ConfigError` and nothing else, thousands of times; in a subprocess, a
sample must make ``forge check`` and ``forge config`` exit 2 without a traceback.

Runs are deterministic (``derandomize=True``, no example database).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import tomllib
import types
import typing
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from conftest import Project
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ByteSize
from pydantic.fields import FieldInfo

from runtime._config import Settings, load
from runtime._config.units import check_database_url, check_path, parse_duration
from runtime._errors import ConfigError

DETERMINISTIC = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

UNSET = "FORGE_FUZZ_UNSET"
SUBPROCESS_SAMPLE = 20
ENVIRON = {"FORGE_FUZZ_SET": "value", "FORGE_FUZZ_EMPTY": ""}


# --- the schema, read from the models ------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    section: str
    name: str
    kind: str
    """int, duration, size, str, path, url, bool, list, choice or other."""
    low: float | None = None
    high: float | None = None

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}"


def _kind(info: FieldInfo) -> str:
    metadata = list(info.metadata)
    annotation = info.annotation
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) in {typing.Union, types.UnionType} and len(args) == 1:
        annotation = args[0]  # X | None: TOML cannot say None, so X
    if typing.get_origin(annotation) is typing.Annotated:  # kept whole inside a union
        annotation, *more = typing.get_args(annotation)
        metadata += more
    validators = {getattr(meta, "func", None) for meta in metadata}
    if parse_duration in validators:
        return "duration"
    if check_path in validators:
        return "path"
    if check_database_url in validators:
        return "url"
    if typing.get_origin(annotation) is typing.Literal:
        return "choice"
    if typing.get_origin(annotation) is list:
        return "list"
    if annotation is bool:
        return "bool"
    if isinstance(annotation, type) and issubclass(annotation, ByteSize):
        return "size"
    if annotation is int:
        return "int"
    if annotation is str:
        return "str"
    return "other"


def _bounds(info: FieldInfo) -> tuple[float | None, float | None]:
    """The lowest and highest valid number, the strictest of all constraints
    (``gt=0`` counts as a lowest just above 0)."""
    lows: list[float] = []
    highs: list[float] = []
    for meta in info.metadata:
        if getattr(meta, "ge", None) is not None:
            lows.append(meta.ge)
        if getattr(meta, "gt", None) is not None:
            lows.append(meta.gt + (1 if isinstance(meta.gt, int) else 1e-9))
        if getattr(meta, "le", None) is not None:
            highs.append(meta.le)
        if getattr(meta, "lt", None) is not None:
            highs.append(meta.lt - 1)
    return (max(lows) if lows else None), (min(highs) if highs else None)


def schema() -> list[Key]:
    """Every key of every section of `Settings` (the free ``[env]`` table aside)."""
    keys = []
    for section, info in Settings.model_fields.items():
        model = info.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        for name, field_info in model.model_fields.items():
            low, high = _bounds(field_info)
            keys.append(Key(section, name, _kind(field_info), low, high))
    return keys


KEYS = schema()
SECTIONS = sorted({key.section for key in KEYS} | {"env"})
FREE_SECTION = "env"


def test_the_schema_is_read_whole() -> None:
    """Every key of every section is fuzzed, with a kind that knows its bad values."""
    assert {"server", "database", "shutdown", "logging", "frontend"} <= set(SECTIONS)
    kinds = {key.dotted: key.kind for key in KEYS}
    assert kinds["server.port"] == "int"
    assert kinds["shutdown.drain_timeout"] == "duration"
    assert kinds["server.max_body_size"] == "size"
    assert kinds["handlers.path"] == "path"
    assert kinds["database.url"] == "url"
    assert kinds["logging.level"] == "choice"
    assert kinds["jobs.queues"] == "list"
    assert kinds["scheduler.enabled"] == "bool"
    assert [key.dotted for key in KEYS if key.kind == "other"] == []


# --- values ------------------------------------------------------------------------------------

DATETIMES = st.one_of(
    st.datetimes(
        min_value=dt.datetime(1, 1, 1),
        max_value=dt.datetime(9999, 12, 31),
        timezones=st.sampled_from([None, dt.UTC]),
    ).map(lambda value: value.replace(microsecond=0)),
    st.dates(),
    st.times().map(lambda value: value.replace(microsecond=0)),
)
TABLES = st.dictionaries(st.sampled_from(["a", "port", "x y"]), st.integers(0, 9), max_size=2)
NOT_SCALARS = st.one_of(
    st.lists(st.one_of(st.integers(), st.text(max_size=5)), max_size=3),
    TABLES,
    st.just([{"port": 1}]),
    st.just([[["deep"]]]),
    DATETIMES,
)
NON_FINITE = st.sampled_from([math.inf, -math.inf, math.nan])
UNSET_REFERENCE = st.builds(
    lambda n, before, after: f"{before}${{{UNSET}_{n}}}{after}",
    st.integers(0, 9),
    st.sampled_from(["", "prefix-", "$$"]),
    st.sampled_from(["", "-suffix", ":-x"]),
)
BAD_DURATIONS = st.sampled_from(
    [
        *("5 parsecs", "-1s", "1e400", "1e3s", "fast", "", " ", "1 2s", "30 s s", "inf", "nan"),
        *("-0.5", "1d", "30sec", "0x10", "1_000", "9" * 400 + "h", "${", "${A:-"),
    ]
)
BAD_SIZES = st.sampled_from(
    [
        *("-1MB", "huge", "1e400", "5 parsecs", "", "10 MB MB", "1.5.5MB", "inf", "NaN", "-0"),
        *("10 parsecs", "${", "0x10"),
    ]
)
BAD_BOOLS = st.sampled_from(["maybe", "2", "", "tru", "yess", "${", "null", "none"])
BAD_INT_STRINGS = st.sampled_from(["abc", "1.5", "", " ", "0x10", "1e3", "eight", "${A:-"])
LONG_NAMES = st.sampled_from(
    ["x" * 256, "/".join(["y" * 100] * 45), "a/" + "z" * 300 + "/b", "\u00e9" * 128]
)


def invalid_values(key: Key) -> st.SearchStrategy[Any]:
    """Values that `key` must refuse, whatever the rest of the document says."""
    common = [NOT_SCALARS, UNSET_REFERENCE]
    kind = key.kind
    if kind == "int":
        out_of_range = []
        if key.low is not None:
            out_of_range += [st.integers(max_value=math.ceil(key.low) - 1), st.just(-(10**30))]
        if key.high is not None:
            out_of_range += [st.integers(min_value=int(key.high) + 1), st.just(10**30)]
        fractions = st.floats(allow_nan=False, allow_infinity=False).filter(
            lambda f: not f.is_integer()
        )
        return st.one_of(*common, BAD_INT_STRINGS, fractions, NON_FINITE, *out_of_range)
    if kind == "duration":
        negative = st.one_of(st.integers(max_value=-1), st.floats(max_value=-1e-6))
        out_of_range = []
        if key.low is not None and key.low > 0:
            out_of_range.append(st.floats(0, key.low, exclude_max=True))
        if key.high is not None:
            out_of_range.append(st.floats(key.high, 1e300, exclude_min=True))
        # 10**400 is a TOML integer, and no float: an infinite duration.
        return st.one_of(
            *common, BAD_DURATIONS, negative, NON_FINITE, st.just(10**400), *out_of_range
        )
    if kind == "size":
        negative = st.integers(max_value=-1)
        fractions = st.floats(0.01, 1e6).filter(lambda f: not f.is_integer())
        return st.one_of(*common, BAD_SIZES, negative, fractions, NON_FINITE)
    if kind in {"str", "path", "url"}:
        scalars = st.one_of(st.integers(), st.floats(), st.booleans())
        extra = []
        if kind == "path":
            extra = [LONG_NAMES, st.just("a\x00b")]
        if kind == "url":
            extra = [LONG_NAMES.map(lambda name: f"sqlite:///{name}"), st.just("sqlite:///\x00")]
        return st.one_of(*common, scalars, *extra)
    if kind == "bool":
        return st.one_of(
            *common, BAD_BOOLS, st.integers().filter(lambda n: n not in (0, 1)), st.just(0.5)
        )
    if kind == "list":
        items = st.one_of(st.integers(), st.booleans(), TABLES, st.just([["nested"]]), DATETIMES)
        return st.one_of(
            UNSET_REFERENCE.map(lambda ref: [ref]),
            st.lists(items, min_size=1, max_size=3),
            st.integers(),
            TABLES,
            DATETIMES,
        )
    if kind == "choice":
        return st.one_of(
            *common,
            st.text(max_size=8).map(lambda text: text + "-not-a-choice"),
            st.integers(),
        )
    return st.one_of(*common)


_ODD_SCALARS = st.one_of(
    st.integers(),
    st.floats(),
    st.booleans(),
    st.text(max_size=20),
    st.sampled_from(["${", "${A:-", "$$", "${FORGE_FUZZ_SET}", "${FORGE_FUZZ_EMPTY:-x}"]),
    st.sampled_from(["30s", "0", "yes", "10MB", "8000", "INFO", "/", ".", "..", ""]),
    st.sampled_from(["1_000", "\u0661\u0662s", "1.5", " 5 ", "+5", 2**63, 10**400, -(10**30)]),
    st.sampled_from(["x" * 100_000, "\u00e9\u4e2d\U0001f600", "\t\u0001\u007f", "a\nb"]),
    DATETIMES,
    LONG_NAMES,
)
ODD_VALUES = st.one_of(_ODD_SCALARS, st.lists(_ODD_SCALARS, max_size=3), TABLES)
"""Anything TOML can say, valid or not for the key it lands on."""

# Strategies are built once, here: one built inside each draw is validated
# anew every time, which costs far more than loading the configuration.
KEY_CHOICES = st.sampled_from(KEYS)
INVALID = {key: invalid_values(key) for key in KEYS}
_NAMES = st.text(
    st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"),
    min_size=1,
    max_size=12,
)
UNKNOWN_SECTIONS = _NAMES.filter(lambda name: name not in SECTIONS)
UNKNOWN_KEYS = {
    section: _NAMES.filter(
        lambda name, known=frozenset(k.name for k in KEYS if k.section == section): (
            name not in known
        )
    )
    for section in SECTIONS
    if section != FREE_SECTION
}
ENV_NAMES = st.text(
    st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"), min_size=1, max_size=9
)
NOT_A_TABLE = st.one_of(
    st.integers(), st.text(max_size=5), st.booleans(), st.just([{"port": 1}]), DATETIMES
)
BAD_ENV_VALUES = st.one_of(
    st.lists(st.integers(), max_size=2), TABLES, st.just([{"a": 1}]), DATETIMES, UNSET_REFERENCE
)
BREAKAGES = st.sampled_from(
    ["value", "value", "value", "unknown-key", "unknown-section", "section"]
)


# --- documents ---------------------------------------------------------------------------------


def valid_values() -> dict[str, dict[str, Any]]:
    """The defaults, as forge.toml would spell them (TOML has no None)."""
    dumped = Settings().model_dump(mode="json")
    return {
        section: {key: value for key, value in values.items() if value is not None}
        for section, values in dumped.items()
        if isinstance(values, dict)
    }


DEFAULTS = valid_values()
DEFAULT_SECTIONS = st.sets(st.sampled_from(sorted(DEFAULTS)), max_size=4)
DEFAULT_KEYS = {
    section: st.sets(st.sampled_from(sorted(values)), max_size=3)
    for section, values in DEFAULTS.items()
    if values
}
GREETINGS = st.sampled_from(["hi", 1, True, 2.5, "${FORGE_FUZZ_SET}"])


@dataclass
class Document:
    data: dict[str, Any]
    broken: list[str] = field(default_factory=list)
    """Dotted keys (or sections) that make the document invalid; one must be named."""

    def text(self) -> str:
        return tomli_w.dumps(self.data)


@st.composite
def base_documents(draw: st.DrawFn) -> Document:
    """A valid document: some sections, with some of their keys at valid values."""
    data: dict[str, Any] = {}
    for section in sorted(draw(DEFAULT_SECTIONS)):
        chosen = draw(DEFAULT_KEYS[section]) if section in DEFAULT_KEYS else set()
        data[section] = {name: DEFAULTS[section][name] for name in sorted(chosen)}
    if draw(st.booleans()):
        data["env"] = {"GREETING": draw(GREETINGS)}
    return Document(data)


def _section(document: Document, name: str) -> dict[str, Any]:
    """The table of section `name`, made one again if an earlier breakage replaced it."""
    table = document.data.get(name)
    if not isinstance(table, dict):
        table = document.data[name] = {}
    return table


def _break_once(draw: st.DrawFn, document: Document) -> None:
    """Make `document` invalid in one way; record the key that an error must name."""
    how = draw(BREAKAGES)
    if how == "value":
        key = draw(KEY_CHOICES)
        _section(document, key.section)[key.name] = draw(INVALID[key])
        document.broken.append(key.dotted)
    elif how == "unknown-key":
        section = draw(st.sampled_from(sorted(UNKNOWN_KEYS)))
        name = draw(UNKNOWN_KEYS[section])
        _section(document, section)[name] = draw(ODD_VALUES)
        document.broken.append(f"{section}.{name}")
    elif how == "unknown-section":
        name = draw(UNKNOWN_SECTIONS)
        document.data[name] = draw(ODD_VALUES)
        document.broken.append(name)
    else:  # a section that is no table, or an array of tables
        section = draw(st.sampled_from(SECTIONS))
        document.data[section] = draw(NOT_A_TABLE)
        document.broken.append(section)


@st.composite
def invalid_documents(draw: st.DrawFn) -> Document:
    document = draw(base_documents())
    for _ in range(draw(st.integers(1, 3))):
        _break_once(draw, document)
    if draw(st.booleans()):  # an [env] value that no environment variable can hold
        name = draw(ENV_NAMES)
        _section(document, "env")[name] = draw(BAD_ENV_VALUES)
        document.broken.append(f"env.{name}")
    return document


@st.composite
def odd_documents(draw: st.DrawFn) -> Document:
    """Any key of the schema, or none, set to anything: valid or not, never a traceback."""
    document = draw(base_documents())
    for _ in range(draw(st.integers(1, 4))):
        key = draw(KEY_CHOICES)
        _section(document, key.section)[key.name] = draw(ODD_VALUES)
    return document


BREAKERS = [
    '"',
    "'",
    '"""',
    "[",
    "]",
    "[[",
    "{",
    "}",
    "=",
    "\n",
    "\r",
    "\\",
    ",",
    ".",
    "#",
    " = ",
    "\x00",
    "\x01",
    "\x7f",
    "\u2028",
    "\ufeff",
    "\\u",
    "\\ud800",
    "0x",
    "1979-13-45",
]


BREAKER_CHOICES = st.sampled_from(BREAKERS)
SOURCES = st.one_of(base_documents(), invalid_documents())
MUTATIONS = st.sampled_from(["truncate", "insert", "insert", "duplicate", "delete"])
ENDINGS = st.sampled_from(["", "", "bom", "latin-1", "overlong", "nested"])


@st.composite
def broken_texts(draw: st.DrawFn) -> bytes:
    """forge.toml as bytes, broken as text: most of these are no TOML at all."""
    source = draw(SOURCES).text()
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.integers(0, len(source)))
        how = draw(MUTATIONS)
        if how == "truncate":
            source = source[:where]
        elif how == "insert":
            source = source[:where] + draw(BREAKER_CHOICES) + source[where:]
        elif how == "duplicate":  # a duplicated line: duplicate keys or tables
            lines = source.splitlines(keepends=True) or [""]
            line = draw(st.sampled_from(lines))
            source = source + "\n" + line
        else:
            source = source[:where] + source[where + 1 :]
    data = source.encode("utf-8", "surrogatepass")
    ending = draw(ENDINGS)
    if ending == "bom":
        data = b"\xef\xbb\xbf" + data
    elif ending == "latin-1":
        data += '\n[app]\nname = "caf\u00e9"\n'.encode("latin-1")
    elif ending == "overlong":
        data += b'\nx = "\xc0\xae"\n'
    elif ending == "nested":
        depth = draw(st.sampled_from([10, 500, 5000]))
        data += b"\nx = " + b"[" * depth + b"]" * draw(st.sampled_from([0, depth])) + b"\n"
    return data


# --- in process --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-config")


def load_text(directory: Path, data: bytes) -> Settings | ConfigError:
    """`load` on a forge.toml holding `data`: the settings, or the ConfigError it raised.

    Any other exception propagates, and fails the test.
    """
    path = directory / "forge.toml"
    path.write_bytes(data)
    try:
        return load(path, environ=ENVIRON)
    except ConfigError as error:
        return error


def _named(error: ConfigError, names: list[str]) -> bool:
    """Whether a line of the message is about one of `names` (or a key inside it)."""
    return any(re.search(rf"forge\.toml: {re.escape(name)}[.:]", error.message) for name in names)


@settings(DETERMINISTIC, max_examples=1500)
@given(document=invalid_documents())
@example(Document({"shutdown": {"drain_timeout": 10**400}}, ["shutdown.drain_timeout"]))
@example(Document({"shutdown": {"drain_timeout": math.inf}}, ["shutdown.drain_timeout"]))
@example(Document({"handlers": {"path": "x" * 300}}, ["handlers.path"]))
@example(Document({"frontend": {"path": "a\x00b"}}, ["frontend.path"]))
@example(Document({"database": {"url": "sqlite:///" + "x" * 300}}, ["database.url"]))
@example(Document({"env": {"A": [[[[[[[[[["deep"]]]]]]]]]]}}, ["env.A"]))
def test_invalid_documents_raise_config_error_naming_the_key(
    config_dir: Path, document: Document
) -> None:
    result = load_text(config_dir, document.text().encode())
    assert isinstance(result, ConfigError), (document, result)
    assert "forge.toml" in result.message, result.message
    assert _named(result, document.broken), (document.broken, result.message)
    assert "Traceback" not in str(result)


@settings(DETERMINISTIC, max_examples=1000)
@given(document=odd_documents())
@example(Document({"app": {"env": "x" * 300}}))  # .env.<APP_ENV> cannot exist
@example(Document({"app": {"env": "../../../etc"}}))
def test_any_value_is_settings_or_config_error(config_dir: Path, document: Document) -> None:
    result = load_text(config_dir, document.text().encode())
    if isinstance(result, ConfigError):
        assert "forge.toml" in result.message, result.message


@settings(DETERMINISTIC, max_examples=1500)
@given(data=broken_texts())
@example(b'[server]\nport = "abc')  # unterminated string
@example(b"[server]\nport = 1\nport = 2\n")  # duplicate key
@example(b"[server]\n[server]\n")  # duplicate table
@example(b"\xef\xbb\xbf[server]\nport = 1\n")  # BOM
@example(b"\xff\xfe[server]\n")  # not UTF-8
@example(b"x = " + b"[" * 5000 + b"]" * 5000)  # past tomllib's recursion
@example(b"[" + b".".join([b"a"] * 5000) + b"]\n")  # deep, in one header
@example(b"[server]\nport = " + b"9" * 5000 + b"\n")  # past Python's digit limit
def test_broken_toml_is_config_error_naming_the_file(config_dir: Path, data: bytes) -> None:
    result = load_text(config_dir, data)
    try:
        # Read as the loader reads it: as text, so a bare CR is a newline (TOML itself
        # refuses one; old Mac line endings are accepted, and that is harmless).
        tomllib.loads(data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n"))
        parses = True
    except (UnicodeDecodeError, ValueError, RecursionError):
        parses = False
    if not parses:
        assert isinstance(result, ConfigError), (data[:200], result)
        assert str(config_dir / "forge.toml") in result.message, result.message
    elif isinstance(result, ConfigError):
        assert "forge.toml" in result.message, result.message


# --- end to end: `forge check` and `forge config` ----------------------------------------------


def test_cli_exits_2_without_a_traceback(tmp_path: Path) -> None:
    """A sample of the invalid documents through the real CLI, ``forge check`` and
    ``forge config`` in turn: a subprocess each, so few, and two at a time."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    sample: list[bytes] = []

    @settings(DETERMINISTIC, max_examples=SUBPROCESS_SAMPLE, phases=[Phase.generate])
    @given(st.one_of(invalid_documents().map(lambda d: d.text().encode()), broken_texts()))
    def collect(document: bytes) -> None:
        # Broken text can happen to stay a valid configuration: keep those that fail.
        if isinstance(load_text(scratch, document), ConfigError):
            sample.append(document)

    collect()
    assert len(sample) >= SUBPROCESS_SAMPLE // 2

    def run(index: int, document: bytes) -> None:
        project = Project(root=tmp_path / f"app{index}")
        project.root.mkdir()
        (project.root / "forge.toml").write_bytes(document)
        command = ("check", "config")[index % 2]
        result = project.forge(command, env=ENVIRON, timeout=60)
        output = result.stdout + result.stderr
        assert result.returncode == 2, (command, document[:300], output)
        assert "Traceback" not in output, (command, output)
        assert "forge.toml" in output, (command, output)

    with ThreadPoolExecutor(max_workers=2) as pool:
        for future in [pool.submit(run, i, document) for i, document in enumerate(sample)]:
            future.result()
