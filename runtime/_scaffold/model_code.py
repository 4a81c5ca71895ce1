"""The code ``forge new model`` writes: the handler module (the model, its JSON shapes,
its CRUD routes) and its tests, built from the fields and laid out as ruff does."""

from __future__ import annotations

from .code import call, docstring, import_line, literal, mapping
from .fields import Field, ModelNames

# The request body's field types (`FieldType.accepted`), declared once in the module.
_ACCEPTED = {
    "ShortText": (
        'Annotated[str, Meta(max_length=200, pattern=r"^[^\\x00]*$")]',
        "Up to 200 characters, none of them NUL (PostgreSQL cannot store it).",
    ),
    "LongText": (
        'Annotated[str, Meta(pattern=r"^[^\\x00]*$")]',
        "Any length, no NUL character (PostgreSQL cannot store it).",
    ),
    "Int32": (
        "Annotated[int, Meta(ge=-(2**31), le=2**31 - 1)]",
        "What PostgreSQL's integer column holds: 32 bits.",
    ),
    "AwareDatetime": (
        "Annotated[datetime, Meta(tz=True)]",
        "With its offset (Z, +02:00): stored in UTC.",
    ),
}

TAKEN = {
    *_ACCEPTED,
    *("Annotated", "Any", "UTC", "Ctx", "Base", "Meta", "Struct", "Mapped", "Limit"),
    *("JSONBody", "PathParameter", "QueryParameter", "NotFoundException"),
    *("JSON", "Boolean", "Date", "DateTime", "Float", "Integer", "String", "Text"),
}
"""Names the module imports or declares: a model of one of these names would hide it."""

_DEFINITION = ("class ", "def ", "async def ", "@")


def handler_module(names: ModelNames, fields: list[Field], prefix: str, base: str) -> str:
    """handlers/<plural>.py: the model, what its routes take and answer, the routes."""
    model, one = names.model, names.singular
    url = f"{prefix}/{names.path}"
    kinds = {field.kind for field in fields}
    accepted = sorted({field.type.accepted for field in fields} & set(_ACCEPTED))
    columns = {field.type.column.split("(")[0] for field in fields} | {"DateTime", "select"}
    dates = {"UTC", "datetime"} | ({"date"} if "date" in kinds else set())
    imports = [
        "\n".join([import_line("datetime", dates), import_line("typing", {"Annotated", "Any"})]),
        "\n".join(
            [
                import_line("litestar", {"delete", "get", "post", "put"}),
                import_line("litestar.exceptions", {"NotFoundException"}),
                import_line("litestar.params", {"JSONBody", "PathParameter", "QueryParameter"}),
                import_line("msgspec", {"Meta", "Struct"} if accepted else {"Struct"}),
                import_line("msgspec.structs", {"asdict"}),
                import_line("runtime", {"Ctx"}),
                import_line("sqlalchemy", columns),
                import_line("sqlalchemy.orm", {"Mapped", "mapped_column"}),
            ]
        ),
        f"from .{base} import Base",
    ]
    types = [
        f"{model}Id = Annotated[int, PathParameter(ge=1, le=2**31 - 1)]",
        docstring(f"{names.a_words.capitalize()}'s id: PostgreSQL's integers are 32 bits."),
        "Limit = Annotated[int, QueryParameter(ge=1, le=500)]",
    ]
    for name in accepted:
        annotation, doc = _ACCEPTED[name]
        types += [f"{name} = {annotation}", docstring(doc)]
    parts = [
        docstring(
            f"The {model} model and its routes under {url} (written by forge new model).",
            f"GET {url} lists the newest first (?limit=, 500 at most), POST creates one; "
            f"GET, PUT and DELETE {url}/{{{one}_id}} read, replace and delete one. Its "
            "table comes from the revision forge new model wrote in migrations/; "
            f"tests/test_{names.plural}.py tests the routes.",
        ),
        *imports,
        "\n".join(types),
        _model_class(names, fields),
        _accepted_class(names, fields),
        _answered_class(names, fields),
        _answer_function(names, fields),
        _columns_function(names, fields),
        '''def aware(moment: datetime | None) -> datetime | None:
    """`moment` in UTC: SQLite hands back the naive times it was given in UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)''',
        "\n".join(
            [
                call(0, "async def find", ["ctx: Ctx", "ident: int"], f" -> {model}:"),
                docstring(f"The {names.words} `ident`, or a 404.", indent=4),
                f"    row = await ctx.db.get({model}, ident)",
                "    if row is None:",
                f'        raise NotFoundException(f"{names.words} {{ident}} not found")',
                "    return row",
            ]
        ),
        *_routes(names),
    ]
    return _module(parts)


def _model_class(names: ModelNames, fields: list[Field]) -> str:
    attributes = [
        call(4, f"{field.name}: Mapped[{_python(field)}] = mapped_column", [field.type.column])
        for field in fields
    ]
    return "\n".join(
        [
            f"class {names.model}(Base):",
            f'    __tablename__ = "{names.plural}"',
            "",
            "    id: Mapped[int] = mapped_column(primary_key=True)",
            *attributes,
            "    created_at: Mapped[datetime] = mapped_column(",
            "        DateTime(timezone=True), default=lambda: datetime.now(UTC)",
            "    )",
        ]
    )


def _accepted_class(names: ModelNames, fields: list[Field]) -> str:
    required = [
        f"    {field.name}: {field.type.accepted}" for field in fields if not field.nullable
    ]
    optional = [
        f"    {field.name}: {field.type.accepted} | None = None"
        for field in fields
        if field.nullable
    ]
    doc = "What POST and PUT take: every field; those that may be null default to it."
    return "\n".join(
        [
            f"class {names.model}In(Struct, kw_only=True):",
            docstring(doc, indent=4),
            "",
            *required,
            *optional,
        ]
    )


def _answered_class(names: ModelNames, fields: list[Field]) -> str:
    doc = "What the routes answer: its id, its fields, and when it was created."
    return "\n".join(
        [f"class {names.model}Out(Struct):", docstring(doc, indent=4), "", "    id: int"]
        + [f"    {field.name}: {_python(field)}" for field in fields]
        + ["    created_at: datetime"]
    )


def _answer_function(names: ModelNames, fields: list[Field]) -> str:
    values = [
        f"aware(row.{field.name})" if field.kind == "datetime" else f"row.{field.name}"
        for field in fields
    ]
    arguments = [
        "id=row.id",
        *(f"{field.name}={value}" for field, value in zip(fields, values, strict=True)),
        "created_at=aware(row.created_at)",
    ]
    return "\n".join(
        [
            call(0, "def answer", [f"row: {names.model}"], f" -> {names.model}Out:"),
            f"    return {names.model}Out(",
            *(f"        {argument}," for argument in arguments),
            "    )",
        ]
    )


def _columns_function(names: ModelNames, fields: list[Field]) -> str:
    head = call(0, "def columns", [f"data: {names.model}In"], " -> dict[str, Any]:")
    times = [field.name for field in fields if field.kind == "datetime"]
    if not times:
        return "\n".join(
            [
                head,
                docstring("The columns of `data`: its fields.", indent=4),
                "    return asdict(data)",
            ]
        )
    names_tuple = ", ".join(literal(time) for time in times) + ("," if len(times) == 1 else "")
    return "\n".join(
        [
            head,
            docstring("The columns of `data`, its times in UTC: SQLite keeps no offset.", indent=4),
            "    values = asdict(data)",
            f"    for name in ({names_tuple}):",
            "        if values[name] is not None:",
            "            values[name] = values[name].astimezone(UTC)",
            "    return values",
        ]
    )


def _routes(names: ModelNames) -> list[str]:
    model, one, many, path = names.model, names.singular, names.plural, names.path
    ident = f"{one}_id: {model}Id"
    body = f"data: JSONBody[{model}In]"
    return [
        "\n".join(
            [
                f'@get("/{path}")',
                call(
                    0,
                    f"async def list_{many}",
                    ["ctx: Ctx", "limit: Limit = 100"],
                    f" -> list[{model}Out]:",
                ),
                docstring("The newest first, `limit` at most.", indent=4),
                f"    newest = {model}.id.desc()",
                f"    query = select({model}).order_by(newest).limit(limit)",
                "    return [answer(row) for row in await ctx.db.scalars(query)]",
            ]
        ),
        "\n".join(
            [
                f'@post("/{path}")',
                call(0, f"async def create_{one}", ["ctx: Ctx", body], f" -> {model}Out:"),
                f"    row = {model}(**columns(data))",
                "    ctx.db.add(row)",
                "    await ctx.db.flush()  # its id and created_at",
                "    return answer(row)",
            ]
        ),
        "\n".join(
            [
                f'@get("/{path}/{{{one}_id:int}}")',
                call(0, f"async def get_{one}", ["ctx: Ctx", ident], f" -> {model}Out:"),
                f"    return answer(await find(ctx, {one}_id))",
            ]
        ),
        "\n".join(
            [
                f'@put("/{path}/{{{one}_id:int}}")',
                call(0, f"async def replace_{one}", ["ctx: Ctx", ident, body], f" -> {model}Out:"),
                f"    row = await find(ctx, {one}_id)",
                "    for name, value in columns(data).items():",
                "        setattr(row, name, value)",
                "    return answer(row)",
            ]
        ),
        "\n".join(
            [
                f'@delete("/{path}/{{{one}_id:int}}")',
                call(0, f"async def delete_{one}", ["ctx: Ctx", ident], " -> None:"),
                f"    await ctx.db.delete(await find(ctx, {one}_id))",
            ]
        ),
    ]


def _changed(field: Field) -> object:
    return None if field.nullable else field.type.samples[1]


def _python(field: Field) -> str:
    return f"{field.type.python} | None" if field.nullable else field.type.python


def _module(parts: list[str]) -> str:
    """Top-level parts: two blank lines around definitions, one between the rest."""
    text = ""
    for index, part in enumerate(parts):
        if index:
            plain = not part.startswith(_DEFINITION)
            text += "\n" if plain and not parts[index - 1].startswith(_DEFINITION) else "\n\n"
        text += part + "\n"
    return text


def test_module(names: ModelNames, fields: list[Field], prefix: str) -> str:
    """tests/test_<plural>.py: the routes over HTTP, on runtime.testing's fixtures."""
    one, many = names.singular, names.plural
    client = "forge_client: httpx.AsyncClient"
    created = f"    {one} = (await forge_client.post(URL, json=NEW)).json()"
    item = f"    item = f\"{{URL}}/{{{one}['id']}}\""

    def test(name: str, *lines: str) -> str:
        return "\n".join([call(0, f"async def test_{name}", [client], " -> None:"), *lines])

    tests = [
        test(
            f"create_and_get_a_{one}",
            "    created = await forge_client.post(URL, json=NEW)",
            "    assert created.status_code == 201, created.text",
            f"    {one} = created.json()",
            f"    assert fields_of({one}) == ANSWERED",
            item,
            "    fetched = await forge_client.get(item)",
            "    assert fetched.status_code == 200",
            f"    assert fetched.json() == {one}",
        ),
        test(
            f"list_{many}_newest_first",
            "    first = (await forge_client.post(URL, json=NEW)).json()",
            "    second = (await forge_client.post(URL, json=CHANGED)).json()",
            "    listed = await forge_client.get(URL)",
            "    assert listed.status_code == 200",
            "    assert listed.json() == [second, first]",
            '    limited = await forge_client.get(URL, params={"limit": 1})',
            "    assert limited.json() == [second]",
        ),
        test(
            f"replace_a_{one}",
            created,
            item,
            "    replaced = await forge_client.put(item, json=CHANGED)",
            "    assert replaced.status_code == 200, replaced.text",
            "    assert fields_of(replaced.json()) == CHANGED",
            "    assert (await forge_client.get(item)).json() == replaced.json()",
        ),
        test(
            f"delete_a_{one}",
            created,
            item,
            "    assert (await forge_client.delete(item)).status_code == 204",
            "    assert (await forge_client.get(item)).status_code == 404",
        ),
        test(
            f"a_{one}_that_is_not_there",
            '    assert (await forge_client.get(f"{URL}/1")).status_code == 404',
            '    assert (await forge_client.put(f"{URL}/1", json=NEW)).status_code == 404',
            '    assert (await forge_client.delete(f"{URL}/1")).status_code == 404',
        ),
    ]
    required = [field.name for field in fields if not field.nullable]
    if required:
        tests.append(
            test(
                f"a_{one}_with_a_field_missing_is_refused",
                "    given = dict(NEW)",
                f'    del given["{required[0]}"]',
                "    refused = await forge_client.post(URL, json=given)",
                "    assert refused.status_code == 400, refused.text",
                f'    assert refused.json()["extra"][0]["key"] == "{required[0]}"',
            )
        )
    parts = [
        docstring(
            f"Tests of handlers/{many}.py (written by forge new model): its routes over "
            "HTTP, each test with the app on a database of its own (runtime.testing)."
        ),
        "import httpx",
        f'URL = "{prefix}/{names.path}"',
        "\n".join(
            [
                mapping(0, "NEW = ", {field.name: field.type.samples[0] for field in fields}),
                docstring(f"What {names.a_words} is created with."),
                mapping(0, "ANSWERED = ", {field.name: field.type.samples[2] for field in fields}),
                docstring("What the app answers for NEW (its times in UTC)."),
                mapping(0, "CHANGED = ", {field.name: _changed(field) for field in fields}),
                docstring("What replaces it: other values, and null where a field may be null."),
            ]
        ),
        "def fields_of(answer: dict) -> dict:\n    return {key: answer[key] for key in NEW}",
        *tests,
    ]
    return _module(parts)
