"""Statements of the hot paths (dealing, API-key authentication), compiled once per model instead of
once per call.

A profile of order_submit showed Django's query compiler spending 0.5-1 ms of CPU on each statement
against ~30 µs for the PostgreSQL round trip, so a market fill spent most of its time building SQL.
These helpers build their SQL from the models' metadata (tables, columns, database defaults), cache
it, and run it on Django's connection (same transaction, same query logging and error wrapping) as
server-side prepared statements, so PostgreSQL too parses and plans each one once per connection.
Rows come back as model instances, built without Django's per-field calls as `new` builds the
hot paths' new rows. `insert` and `update` do what Model.save() and QuerySet.update()
do for models without signal receivers; an INSERT binds a value that Django's conversion would pass
through unchanged as it is, without the calls (about 70 values per market order). Callers keep
every row lock and conditional update they had. `execute` runs a statement of the caller's own
(built with `columns`, read with `build`).
"""

import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from functools import cache
from typing import Any, NamedTuple, TypeVar, cast

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper
from django.db.models import Field, Model
from django.db.models.base import ModelState
from django.db.models.signals import post_init, pre_init
from psycopg._queries import PostgresQuery, _query2pg

M = TypeVar("M", bound=Model)
AnyField = Field[Any, Any]


class _KnownQuery(PostgresQuery):
    """These statements are a small fixed set built from model metadata, so their conversion to
    PostgreSQL's placeholders is cached whatever their size: psycopg caches it only for statements
    under 4 kB and 50 parameters, and converting a fill's one statement (about 70) took longer than
    running it."""

    def convert(self, query: Any, vars: Any) -> None:
        if vars is None or not isinstance(query, str):
            super().convert(query, vars)
            return
        self.query, self._want_formats, self._order, self._parts = _query2pg(
            query.encode(self._tx.encoding), self._tx.encoding
        )
        self.dump(vars)


class _PreparingCursor(psycopg.Cursor[Any]):
    """Server-side binding, every statement prepared on first use (psycopg keeps the connection's
    most used ones prepared). Django's own cursors bind client-side and never prepare."""

    _query_cls = _KnownQuery

    def execute(
        self, query: Any, params: Any = None, *, prepare: bool | None = None, binary: bool | None = None
    ) -> Any:
        return super().execute(query, params, prepare=True, binary=binary)


def _db() -> BaseDatabaseWrapper:
    """This thread's connection wrapper, resolved once per helper call: each attribute read through
    django.db.connection goes through a thread-local proxy (about 70 reads per market order)."""
    return connections[DEFAULT_DB_ALIAS]


def execute(sql: str, params: Sequence[Any]) -> CursorWrapper:
    """Run one statement (prepared) on this thread's connection; the cursor holds its rows."""
    cursor = _cursor(_db())
    cursor.execute(sql, params)
    return cursor


_local = threading.local()


def _cursor(db: BaseDatabaseWrapper) -> CursorWrapper:
    """This thread's cursor on its connection, kept from one statement to the next (every caller
    reads its rows before the next statement): a new psycopg cursor would look up every parameter's
    dumper again, about ten lookups a statement. A new connection gets a new cursor."""
    db.ensure_connection()
    cursor: _PreparingCursor | None = getattr(_local, "cursor", None)
    if cursor is None or cursor.connection is not db.connection or cursor.closed:
        cursor = _local.cursor = _PreparingCursor(db.connection)
    # Django's own wrapping (query log, error translation, thread checks) around our cursor.
    wrap = cast(Callable[[Any], CursorWrapper], db._prepare_cursor)  # type: ignore[attr-defined]
    return wrap(cursor)


def quote(name: str) -> str:
    return _db().ops.quote_name(name)


def _field(model: type[Model], name: str) -> AnyField:
    return cast(AnyField, model._meta.get_field(name))


@cache
def _fields(model: type[Model]) -> tuple[AnyField, ...]:
    return tuple(model._meta.concrete_fields)


@cache
def _attnames(model: type[Model]) -> list[str]:
    return [f.attname for f in _fields(model)]


@cache
def _converters(model: type[Model]) -> list[tuple[int, Callable[..., Any]]]:
    return [(i, f.from_db_value) for i, f in enumerate(_fields(model)) if hasattr(f, "from_db_value")]


def _as_is(field: AnyField) -> type | None:
    """For a field whose pre_save reads the attribute: the type of the values its get_db_prep_save
    returns unchanged on PostgreSQL (a string, a finite Decimal, an aware datetime, a bool, or an
    auto-increment key), so that such a value, or None, is the parameter itself. None for any other
    field, whose values always take Django's path."""
    kind = type(field)
    if kind in (models.CharField, models.TextField):
        return str
    if kind is models.DecimalField:
        return Decimal
    if kind is models.DateTimeField and not (field.auto_now or field.auto_now_add):  # type: ignore[attr-defined]
        return datetime
    if kind is models.BooleanField:
        return bool
    if kind in (models.ForeignKey, models.OneToOneField) and type(field.target_field) in (  # type: ignore[attr-defined]
        models.AutoField,
        models.BigAutoField,
    ):
        return int
    return None


# How to bind a model's fields for an INSERT: each field, its attname and the type of the values it
# saves as they are (_as_is), so the hot paths skip Django's per-field conversion calls for those.
Saver = tuple[AnyField, str, type | None]


def _savers(fields: Sequence[AnyField]) -> list[Saver]:
    return [(f, f.attname, _as_is(f)) for f in fields]


def _save_params(obj: Model, savers: Sequence[Saver], db: BaseDatabaseWrapper, params: list[Any]) -> None:
    """Append what Model.save() would bind for `obj`'s `savers` fields to `params`. The values are
    read from the instance's dict (a foreign key's attname is a data descriptor, a call each)."""
    values = obj.__dict__
    for f, attname, kind in savers:
        if kind is None:
            params.append(f.get_db_prep_save(f.pre_save(obj, True), db))
            continue
        value = values[attname] if attname in values else getattr(obj, attname)
        if (
            value is None
            or (
                type(value) is kind
                and (kind is not Decimal or value.is_finite())  # type: ignore[attr-defined]
                and (kind is not datetime or value.utcoffset() is not None)  # type: ignore[attr-defined]
            )
            or (kind is str and isinstance(value, str))
        ):
            params.append(value)
        else:
            params.append(f.get_db_prep_save(value, db))


class _NewPlan(NamedTuple):
    defaults: list[Any]  # each field's default where it is the same for every instance
    called: list[tuple[int, Callable[[], Any]]]  # where a callable makes it for each instance
    places: dict[str, tuple[int, AnyField | None]]  # by name and attname: the field's place, and
    # the field where the name is a foreign key's (given a related instance, not a key)


@cache
def _new_plan(model: type[Model]) -> _NewPlan:
    defaults: list[Any] = []
    called: list[tuple[int, Callable[[], Any]]] = []
    places: dict[str, tuple[int, AnyField | None]] = {}
    for i, f in enumerate(_fields(model)):
        if f.has_default() and callable(f.default):
            called.append((i, f.default))
            defaults.append(None)
        else:
            defaults.append(f.get_default())  # what Django's __init__ gives each instance
        places[f.attname] = (i, None)
        if f.is_relation:
            assert f.target_field.primary_key, f"{model.__name__}.{f.name} is not to a primary key"  # type: ignore[attr-defined]
            places[f.name] = (i, f)
    return _NewPlan(defaults, called, places)


def new(model: type[M], **values: Any) -> M:
    """`model(**values)` for the hot paths' new rows, at about a third of its CPU: each field takes
    its value, by name or attname, or its default, as Django's __init__ gives them; a related
    object given by name is cached on the instance as its descriptor caches it."""
    plan = _new_plan(model)
    args = plan.defaults.copy()
    for i, make in plan.called:
        args[i] = make()
    related: list[tuple[AnyField, Model]] = []
    for name, value in values.items():
        try:
            i, f = plan.places[name]
        except KeyError:
            raise TypeError(f"{model.__name__}() got an unexpected keyword argument {name!r}") from None
        if f is not None and value is not None:
            related.append((f, value))
            value = value.pk
        args[i] = value
    obj = _instance(model, args)
    for f, value in related:
        f.set_cached_value(obj, value)  # type: ignore[attr-defined]
        remote: Any = f.remote_field
        if not remote.multiple:  # a one-to-one: the other side's cache too
            remote.set_cached_value(value, obj)
    return obj


@cache
def columns(model: type[Model], alias: str) -> str:
    """The model's concrete columns in field order, qualified by `alias`: what `build` reads."""
    return ", ".join(f"{alias}.{quote(f.column)}" for f in _fields(model))


def width(model: type[Model]) -> int:
    return len(_fields(model))


def build(model: type[M], row: Sequence[Any], start: int = 0, db: BaseDatabaseWrapper | None = None) -> M:
    """A model instance from `row[start:]`, laid out as `columns(model, ...)` selects it."""
    db = db or _db()
    values = list(row[start : start + width(model)])
    for i, convert in _converters(model):
        values[i] = convert(values[i], None, db)
    if _reads_itself(model):
        return model.from_db(db.alias, _attnames(model), values)
    obj = _instance(model, values)
    obj._state.adding, obj._state.db = False, db.alias  # as Model.from_db marks a row read
    return obj


@cache
def _reads_itself(model: type[Model]) -> bool:
    """Whether the model overrides from_db (kernel.credentials remembers where a row's secrets go)."""
    return model.from_db.__func__ is not Model.from_db.__func__  # type: ignore[attr-defined]


def _instance(model: type[M], values: Sequence[Any]) -> M:
    """`model(*values)` (every concrete field's value, in field order) as Django's __init__ builds
    it, the values put straight into the instance's dict instead of one descriptor call per field
    (as unpickling builds an instance). A model with pre_init or post_init receivers takes __init__."""
    if (pre_init.receivers and pre_init.has_listeners(model)) or (  # none at all: as Signal.send skips
        post_init.receivers and post_init.has_listeners(model)
    ):
        return model(*values)
    obj = model.__new__(model)
    obj._state = ModelState()
    obj.__dict__.update(zip(_attnames(model), values, strict=True))
    return obj


def select(model: type[M], where: str, params: Sequence[Any], *, related: str | None = None) -> list[M]:
    """Rows of `model` (alias `t`) matching `where`; with `related` (a forward foreign key), each
    row's related object comes in the same query (alias `r`), one instance per distinct row."""
    db = _db()
    cursor = _cursor(db)
    cursor.execute(_select_sql(model, where, related), params)
    rows = cursor.fetchall()
    if related is None:
        return [build(model, row, 0, db) for row in rows]
    remote = cast(type[Model], _field(model, related).related_model)
    shared: dict[Any, Model] = {}
    result = []
    n = width(model)
    for row in rows:
        obj = build(model, row, 0, db)
        other = shared.get(row[n])
        if other is None:
            other = shared[row[n]] = build(remote, row, n, db)
        setattr(obj, related, other)
        result.append(obj)
    return result


@cache
def _select_sql(model: type[Model], where: str, related: str | None) -> str:
    table = quote(model._meta.db_table)
    if related is None:
        return f"SELECT {columns(model, 't')} FROM {table} t WHERE {where}"  # noqa: S608 (model metadata)
    field = _field(model, related)
    remote = cast(type[Model], field.related_model)
    on = f"r.{quote(remote._meta.pk.column)} = t.{quote(field.column)}"
    join = f"{quote(remote._meta.db_table)} r ON {on}"
    return f"SELECT {columns(model, 't')}, {columns(remote, 'r')} FROM {table} t JOIN {join} WHERE {where}"  # noqa: S608


@cache
def _insert_plan(model: type[Model], rows: int) -> tuple[str, list[Saver], list[AnyField]]:
    """Fields with a database default always take it; they come back with RETURNING, like the pk."""
    meta = model._meta
    fields = [f for f in _fields(model) if not f.primary_key and not f.has_db_default()]  # type: ignore[attr-defined]
    returning = cast(list[AnyField], list(meta.db_returning_fields))
    one = "(" + ", ".join(["%s"] * len(fields)) + ")"
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)})"  # noqa: S608
        f" VALUES {', '.join([one] * rows)} RETURNING {', '.join(quote(f.column) for f in returning)}"
    )
    return sql, _savers(fields), returning


def insert(*instances: Model) -> None:
    """INSERT new instances of one model in one statement; sets their pk and database defaults."""
    sql, savers, returning = _insert_plan(type(instances[0]), len(instances))
    db = _db()
    params: list[Any] = []
    for obj in instances:
        _save_params(obj, savers, db, params)
    cursor = _cursor(db)
    cursor.execute(sql, params)
    # PostgreSQL returns the rows of a multi-row VALUES insert in their order.
    for obj, row in zip(instances, cursor.fetchall(), strict=True):
        for f, value in zip(returning, row, strict=True):
            setattr(obj, f.attname, value)
        obj._state.adding = False
        obj._state.db = db.alias


def update(
    model: type[Model],
    pk: Any,
    *,
    values: dict[str, Any] | None = None,
    add: dict[str, Any] | None = None,
    expect: dict[str, Any] | None = None,
) -> int:
    """UPDATE one row: set `values`, add the `add` amounts to their columns, and only if the row
    still holds the `expect` values (a conditional state transition). Returns the rows changed."""
    values, add, expect = values or {}, add or {}, expect or {}
    sql = _update_sql(model, tuple(values), tuple(add), tuple(expect))
    db = _db()
    params = [_prep(model, name, value, db) for name, value in values.items()]
    params += [_prep(model, name, value, db) for name, value in add.items()]
    params.append(pk)
    params += [_prep(model, name, value, db) for name, value in expect.items()]
    cursor = _cursor(db)
    cursor.execute(sql, params)
    return int(cursor.rowcount)


def _prep(model: type[Model], name: str, value: Any, db: BaseDatabaseWrapper) -> Any:
    return _field(model, name).get_db_prep_save(value, db)


@cache
def _update_sql(
    model: type[Model], values: tuple[str, ...], add: tuple[str, ...], expect: tuple[str, ...]
) -> str:
    def column(name: str) -> str:
        return quote(_field(model, name).column)

    changes = [f"{column(n)} = %s" for n in values] + [f"{column(n)} = {column(n)} + %s" for n in add]
    conditions = [f"{quote(model._meta.pk.column)} = %s"] + [f"{column(n)} = %s" for n in expect]
    return f"UPDATE {quote(model._meta.db_table)} SET {', '.join(changes)} WHERE {' AND '.join(conditions)}"  # noqa: S608


# A step of `insert_linked`: new instances of one model, and which of their foreign keys (attnames)
# (field names) take the row an earlier step inserted (by its index; that step inserts one row).
Step = tuple[Sequence[Model], dict[str, int]]
# An UPDATE run in the same statement: model, pk, amounts added to columns.
Addition = tuple[type[Model], Any, dict[str, Any]]


def insert_linked(steps: Sequence[Step], additions: Sequence[Addition] = ()) -> None:
    """INSERT rows that refer to each other (an order, its position, their deal, its ledger
    transaction and postings) and apply `additions`, in one statement and one round trip: each step
    is a data-modifying CTE whose linked foreign keys read the id an earlier one returned. Sets every
    instance's pk, database defaults and linked foreign keys, as `insert` does. Constraints and
    triggers apply as they would to the separate statements (deferred ones at commit)."""
    plan = _linked_plan(
        tuple((type(objs[0]), len(objs), tuple(sorted(links.items()))) for objs, links in steps),
        tuple((model, tuple(add)) for model, _, add in additions),
    )
    db = _db()
    params: list[Any] = []
    for (objs, _), (_, savers, _) in zip(steps, plan.steps, strict=True):
        for obj in objs:
            _save_params(obj, savers, db, params)
    for model, pk, add in additions:
        params += [_prep(model, name, value, db) for name, value in add.items()]
        params.append(pk)
    cursor = _cursor(db)
    cursor.execute(plan.sql, params)
    row = cursor.fetchone()
    at = 0
    for (objs, links), (_, _, returning) in zip(steps, plan.steps, strict=True):
        for f in returning:
            values = row[at] if len(objs) > 1 else [row[at]]
            for obj, value in zip(objs, values, strict=True):
                setattr(obj, f.attname, value)
            at += 1
        for obj in objs:
            for name, step in links.items():
                setattr(obj, name, steps[step][0][0])
            obj._state.adding = False
            obj._state.db = db.alias


class _LinkedPlan:
    """The statement, and per step its model, the fields it binds (all but the linked ones) and
    the fields it returns."""

    def __init__(self, sql: str, steps: list[tuple[type[Model], list[Saver], list[AnyField]]]) -> None:
        self.sql = sql
        self.steps = steps


@cache
def _linked_plan(
    steps: tuple[tuple[type[Model], int, tuple[tuple[str, int], ...]], ...],
    additions: tuple[tuple[type[Model], tuple[str, ...]], ...],
) -> _LinkedPlan:
    ctes: list[str] = []
    plan: list[tuple[type[Model], list[Saver], list[AnyField]]] = []
    selected: list[str] = []
    for n, (model, rows, link_items) in enumerate(steps):
        links = dict(link_items)
        meta = model._meta
        fields = [f for f in _fields(model) if not f.primary_key and not f.has_db_default()]  # type: ignore[attr-defined]
        returning = cast(list[AnyField], list(meta.db_returning_fields))
        values = ", ".join(
            f"(SELECT {quote(steps[links[f.name]][0]._meta.pk.column)} FROM c{links[f.name]})"  # noqa: S608
            if f.name in links
            else "%s"
            for f in fields
        )
        ctes.append(
            f"c{n} AS (INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)})"  # noqa: S608
            f" VALUES {', '.join([f'({values})'] * rows)}"
            f" RETURNING {', '.join(quote(f.column) for f in returning)})"
        )
        # One row per step: a multi-row step's columns are arrays in insertion (sequence) order.
        order = quote(meta.pk.column)
        for f in returning:
            column = quote(f.column)
            selected.append(
                f"(SELECT {column} FROM c{n})"  # noqa: S608 (model metadata)
                if rows == 1
                else f"(SELECT array_agg({column} ORDER BY {order}) FROM c{n})"  # noqa: S608
            )
        plan.append((model, _savers([f for f in fields if f.name not in links]), returning))
    for n, (model, add) in enumerate(additions):
        changes = ", ".join(
            f"{quote(_field(model, a).column)} = {quote(_field(model, a).column)} + %s" for a in add
        )
        ctes.append(
            f"u{n} AS (UPDATE {quote(model._meta.db_table)} SET {changes}"  # noqa: S608
            f" WHERE {quote(model._meta.pk.column)} = %s RETURNING 1)"
        )
    return _LinkedPlan(f"WITH {', '.join(ctes)} SELECT {', '.join(selected)}", plan)
