"""``forge_app.env``: the values ``ctx.env`` answers in a test, changed by the test."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping

from .._context import Env


class _Layer(Mapping[str, str]):
    """`base` with `values` over it and the names in `unset` gone."""

    def __init__(self, base: Mapping[str, str], values: dict[str, str], unset: set[str]) -> None:
        self._base = base
        self._values = values
        self._unset = unset

    def __getitem__(self, name: str) -> str:
        if name in self._unset:
            raise KeyError(name)
        if name in self._values:
            return self._values[name]
        return self._base[name]

    def __iter__(self) -> Iterator[str]:
        names = dict.fromkeys([*self._base, *self._values])
        return (name for name in names if name not in self._unset)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class EnvOverrides(MutableMapping[str, str]):
    """What ``ctx.env`` answers in handlers, jobs, crons and workflows for this test.

    Reads give the value ``ctx.env`` sees (forge.toml's ``[env]``, else the
    environment); ``env["GREETING"] = "Hi"`` overrides one for this test only, and
    ``del env["GREETING"]`` makes it unset (``ctx.env("GREETING", "x")`` is ``"x"``).
    """

    def __init__(self, table: Mapping[str, str], environ: Mapping[str, str]) -> None:
        self._values: dict[str, str] = {}
        self._unset: set[str] = set()
        self._table = _Layer(table, self._values, self._unset)
        self.ctx_env = Env(self._table, _Layer(environ, {}, self._unset))
        """The `Env` the app's contexts get."""

    def __getitem__(self, name: str) -> str:
        value = self.ctx_env(name)
        if value is None:
            raise KeyError(name)
        return value

    def __setitem__(self, name: str, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"env[{name!r}]: values are strings, as in the environment")
        self._unset.discard(name)
        self._values[name] = value

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self._values.pop(name, None)
        self._unset.add(name)

    def __iter__(self) -> Iterator[str]:
        """The names of ``[env]`` and the ones set here (not the whole environment)."""
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def __repr__(self) -> str:
        # Never the values: some are secrets.
        return f"<EnvOverrides {sorted(self._values)} set, {sorted(self._unset)} unset>"
