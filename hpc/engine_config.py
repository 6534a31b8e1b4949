"""The engines a server offers, by name, from its own configuration.

A request names one of these (``"engine": "cluster"``); it can never describe an engine
itself, so no request makes the server connect to an address of its choosing.

Each engine is configured as ``NAME=KIND[,KEY=VALUE...]`` with the fields of
:class:`hpc.job.EngineSpec`, e.g. ``cluster=dask,address=tcp://sched:8786`` or
``gpu=slurm,partition=gpu,gpus=1,time=02:00:00``. ``local`` (one local dask worker) is
always offered unless configured otherwise.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping

from hpc.job import EngineSpec
from ilastik_web.errors import InvalidRequestError

DEFAULT_ENGINE = "local"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def parse_engine(text: str) -> tuple[str, EngineSpec]:
    """``(name, spec)`` from ``NAME=KIND[,KEY=VALUE...]``.

    Raises
    ------
    ValueError
        Malformed text, unknown field or bad value (an InvalidRequestError).
    """
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not _NAME.match(name):
        raise InvalidRequestError(f"engine {text!r}: expected NAME=KIND[,KEY=VALUE...]")
    kind, *pairs = [part.strip() for part in rest.split(",")]
    fields = {f.name: f for f in dataclasses.fields(EngineSpec)}
    values: dict = {"kind": kind}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or key not in fields or key == "kind":
            raise InvalidRequestError(
                f"engine {name!r}: {pair!r} is not KEY=VALUE with a key from "
                f"{', '.join(k for k in fields if k != 'kind')}")
        numeric = fields[key].type in ("int", "int | None")
        try:
            values[key] = int(value) if numeric else value.strip()
        except ValueError:
            raise InvalidRequestError(f"engine {name!r}: {key} must be an integer") from None
    return name, EngineSpec(**values)


class EngineRegistry:
    """Named engines; the server's configuration fills it, requests pick by name.

    Parameters
    ----------
    engines
        Name -> spec; ``local`` is added unless given.
    """

    def __init__(self, engines: Mapping[str, EngineSpec] | None = None):
        self._engines = {DEFAULT_ENGINE: EngineSpec(), **(engines or {})}

    @classmethod
    def parse(cls, texts: Iterable[str]) -> EngineRegistry:
        """A registry from ``NAME=KIND[,KEY=VALUE...]`` texts (command line, config)."""
        return cls(dict(parse_engine(text) for text in texts))

    def names(self) -> list[str]:
        return list(self._engines)

    def get(self, name: str | None) -> EngineSpec:
        """The engine called ``name`` (None: ``local``)."""
        key = DEFAULT_ENGINE if name is None else name
        spec = self._engines.get(key) if isinstance(key, str) else None
        if spec is None:
            raise InvalidRequestError(
                f"engine must be the name of a configured engine: {', '.join(self._engines)}")
        return spec

    def describe(self) -> list[dict]:
        """Names and kinds (not addresses or accounts) for clients to choose from."""
        return [{"name": name, "kind": spec.kind} for name, spec in self._engines.items()]
