"""What ``forge new model Note title:str body:text published:bool`` asks for: a model's
names, and its fields with their types, checked before anything is written."""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass

from .common import ScaffoldError

MAX_NAME = 30
"""The longest model or field name: the code written for them keeps to 88 columns."""

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_FIELD = re.compile(r"[a-z][a-z0-9_]*")
_RESERVED = {
    # Every generated model has these columns.
    "id",
    "created_at",
    # SQLAlchemy's declarative classes use these names themselves.
    "metadata",
    "registry",
}


@dataclass(frozen=True)
class FieldType:
    """One type a field can have: its column, its Python type, and sample values."""

    column: str
    """The SQLAlchemy column type, as written in the model (``String(200)``)."""
    python: str
    """The annotation of the model's attribute (``str``)."""
    accepted: str
    """The annotation of the request body's field (``ShortText``: see `model`)."""
    samples: tuple[object, object, object]
    """A value to create with, one to replace it with, and how the app answers the
    first (a datetime given with an offset is answered in UTC)."""


TYPES: dict[str, FieldType] = {
    "str": FieldType("String(200)", "str", "ShortText", ("First", "Second", "First")),
    "text": FieldType("Text", "str", "LongText", ("Some text.", "Other text.", "Some text.")),
    "int": FieldType("Integer", "int", "Int32", (42, 7, 42)),
    "float": FieldType("Float", "float", "float", (1.5, 2.25, 1.5)),
    "bool": FieldType("Boolean", "bool", "bool", (True, False, True)),
    "datetime": FieldType(
        "DateTime(timezone=True)",
        "datetime",
        "AwareDatetime",
        ("2030-01-02T05:04:05+02:00", "2031-06-07T08:09:10Z", "2030-01-02T03:04:05Z"),
    ),
    "date": FieldType("Date", "date", "date", ("2030-01-02", "2031-06-07", "2030-01-02")),
    "json": FieldType(
        "JSON", "Any", "Any", ({"tags": ["a", "b"]}, {"tags": []}, {"tags": ["a", "b"]})
    ),
}


@dataclass(frozen=True)
class Field:
    """A field of the model: a column, a key of its JSON."""

    name: str
    kind: str
    """A key of `TYPES`."""
    nullable: bool

    @property
    def type(self) -> FieldType:
        return TYPES[self.kind]


@dataclass(frozen=True)
class ModelNames:
    """How a model named ``BlogPost`` is called in each place."""

    model: str
    """``BlogPost``: the class."""
    singular: str
    """``blog_post``: a variable holding one; its words in messages."""
    plural: str
    """``blog_posts``: the table, the handler module, the test module."""
    path: str
    """``blog-posts``: the URL, under the handlers' prefix."""

    @property
    def words(self) -> str:
        """``blog post``: in messages and docstrings."""
        return self.singular.replace("_", " ")

    @property
    def a_words(self) -> str:
        """``a blog post``, ``an event``."""
        return ("an " if self.singular[0] in "aeiou" else "a ") + self.words


def model_names(name: str) -> ModelNames:
    """The names of model `name` (``Note``, ``note``, ``BlogPost`` or ``blog_post``)."""
    parts = [part for part in re.split(r"[_\-]", name) if part]
    if not parts or not all(_WORD.fullmatch(part) for part in parts):
        raise ScaffoldError(
            f"{name!r} is not a valid model name",
            hint="use letters and digits, starting with a letter, e.g. Note or BlogPost",
        )
    model = "".join(part[0].upper() + part[1:] for part in parts)
    singular = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", model).lower()
    if len(singular) > MAX_NAME:
        raise ScaffoldError(
            f"model name {name!r} is too long: {singular!r} has more than {MAX_NAME} characters",
            hint="choose a shorter name",
        )
    plural = pluralize(singular)
    return ModelNames(model, singular, plural, plural.replace("_", "-"))


def pluralize(word: str) -> str:
    """English plural of a snake_case name's last word: note -> notes, category -> categories."""
    if re.search(r"(s|x|z|ch|sh)$", word):
        return word + "es"
    if re.search(r"[^aeiou]y$", word):
        return word[:-1] + "ies"
    return word + "s"


def parse_fields(specs: list[str]) -> list[Field]:
    """``title:str``, ``body:text?`` (nullable), ``name`` (a str): one `Field` each.

    Raises `ScaffoldError` naming the first spec that cannot be used.
    """
    if not specs:
        raise ScaffoldError(
            "a model needs at least one field",
            hint="forge new model Note title:str body:text published:bool",
        )
    fields: list[Field] = []
    for spec in specs:
        name, _, kind = spec.partition(":")
        kind = kind or "str"
        nullable = kind.endswith("?")
        kind = kind.removesuffix("?")
        if not _FIELD.fullmatch(name) or keyword.iskeyword(name) or len(name) > MAX_NAME:
            raise ScaffoldError(
                f"field {spec!r}: {name!r} is not a valid field name",
                hint=f"use lower-case letters, digits and '_', starting with a letter, "
                f"at most {MAX_NAME} characters, e.g. title:str or due_on:date",
            )
        if name in _RESERVED:
            raise ScaffoldError(
                f"field {spec!r}: {name!r} is taken",
                hint="every model has id and created_at; SQLAlchemy keeps metadata and "
                "registry: choose another name",
            )
        if kind not in TYPES:
            raise ScaffoldError(
                f"field {spec!r}: unknown type {kind!r}",
                hint=f"use one of {', '.join(TYPES)}; a trailing ? makes it nullable (due:date?)",
            )
        if any(field.name == name for field in fields):
            raise ScaffoldError(f"field {name!r} is given twice")
        fields.append(Field(name, kind, nullable))
    return fields
