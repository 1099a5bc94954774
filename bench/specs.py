"""Typed references to plug-ins: a weighting, fusion method or architecture named in a configuration, validated once.

A strategy's ``Params`` names the weighting, fusion method and architecture it uses with these types, and a stage
takes them::

    class Params(Frozen):
        weighting: WeightingSpec = WeightingSpec("equal")
        weighting_params: dict[str, Any] = Field(default_factory=dict)   # the weighting's own parameters

    stages.joint(weighting=params.weighting)

When the model is built, the reference takes its parameters from the sibling field ``<field>_params`` (if the model
has one; :class:`bench.config.Frozen` binds them). The plan then checks every reference of a variant's parameters
once, with :meth:`PluginSpec.check`: its name against the registry (an unknown name lists the valid ones), its
parameters by the plug-in's own ``Params``, and what the suite's tasks decide (one fusion weight per task), so a
strategy need not remember to. A stage then builds the plug-in from the validated parameters without checking them
again.

The command line and the records are unchanged: ``strategy.weighting=pcgrad strategy.weighting_params.c=0.4``, and
a reference *is* its name (a ``str``), so the model dumps the name and the parameters' dict as before and a cell's
hash stays the same.

The registries live with the training stack (torch): a reference is checked when it is resolved (the plan, or a
stage), never while the model is built, so ``bench run``'s instant pre-check (:mod:`bench.precheck`), which reads
plug-in names from their files, builds the very same ``Params`` without importing torch.

>>> WeightingSpec("pcgrad") == "pcgrad", WeightingSpec("cagrad", {"c": 0.4}).raw
(True, {'c': 0.4})
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field, GetCoreSchemaHandler, GetJsonSchemaHandler, SerializerFunctionWrapHandler, model_serializer
from pydantic_core import core_schema

from bench.config import Frozen, TaskConfig, validated


class PluginSpec(str):
    """A registered plug-in's name (the string itself) with its parameters: ``raw`` as given, ``params`` validated
    by the plug-in's ``Params`` and ``cls`` the registered class once resolved."""

    kind: ClassVar[str] = ""  # the registry's kind, as its errors name it
    label: ClassVar[str] = ""  # how an error in its parameters names it ("weighting 'cagrad'")
    registry: ClassVar[tuple[str, str]] = ("", "")  # (module, attribute) of the registry

    raw: dict[str, Any]
    cls: Any
    params: Any

    def __new__(cls, name: str, params: Mapping[str, Any] | None = None) -> PluginSpec:
        self = super().__new__(cls, name)
        self.raw, self.cls, self.params = dict(params or {}), None, None
        return self

    def __reduce__(self) -> tuple:  # a copy (or a pickled job) is re-resolved where it is used
        return type(self), (str(self), self.raw)

    def __repr__(self) -> str:  # as its name: every message that quotes a name (`unknown weighting 'x'`) stays one
        return str.__repr__(self)

    @property
    def name(self) -> str:
        return str(self)

    @property
    def resolved(self) -> bool:
        return self.cls is not None

    @classmethod
    def of(cls, name: str, params: Mapping[str, Any] | None = None) -> PluginSpec:
        """A checked reference (importing the registry): an unknown name or a bad parameter raises one line."""
        return cls(name, params).resolve()

    @classmethod
    def given(cls, value: str, params: Mapping[str, Any] | None = None) -> PluginSpec:
        """A stage's argument as a checked reference: a spec as it is, or a name with ``params`` (the call plug-ins
        wrote before specs: ``stages.fuse(parts, "ties", {"k": 0.2})``)."""
        if isinstance(value, cls) and params is None:
            return value.resolve()
        return cls.of(str(value), params)

    def bind(self, params: Mapping[str, Any] | None) -> PluginSpec:
        """This name with ``params`` (a model's sibling field ``<field>_params``), not checked yet."""
        return type(self)(str(self), self.raw if params is None else params)

    def resolve(self) -> PluginSpec:
        """This reference, checked: the registered class and its validated parameters (itself when already done).
        The registry is imported here, not before: a model holding the reference is built without the training
        stack (the instant pre-check reads plug-in names from their files instead)."""
        if self.cls is not None:
            return self
        registry = getattr(importlib.import_module(self.registry[0]), self.registry[1])
        self.cls = registry.get(str(self))
        self.params = validated(self.cls.Params, self.raw, f"{self.label} {str(self)!r}")
        self.check_class()
        return self

    def check_class(self) -> None:
        """Called once the class is known: what a kind checks besides the parameters (a missing extra)."""

    def check(self, task_names: list[str]) -> None:
        """Fail before any data or model is loaded on a bad name or parameter, and on what the suite's tasks decide
        (one fusion weight per task): the plan calls it once for every reference of a variant's parameters."""
        self.resolve()

    # --------------------------------------------------------------------------------------------- pydantic

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._from_name, serialization=core_schema.plain_serializer_function_ser_schema(str))

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return {"type": "string", "description": f"a registered {cls.kind}"}

    @classmethod
    def _from_name(cls, value: Any) -> PluginSpec:
        if isinstance(value, cls):
            return value
        if not isinstance(value, str):
            raise ValueError(f"must be the name of a {cls.kind} (bench list shows them)")
        return cls(value)


class WeightingSpec(PluginSpec):
    """A weighting or aggregator (``strategy.weighting=pcgrad``) and its parameters (``strategy.weighting_params``)."""

    kind, label, registry = "weighting", "weighting", ("bench.weighting.base", "WEIGHTINGS")

    def check_class(self) -> None:
        module = importlib.import_module(self.registry[0])  # resolved: imported already
        module.check_requirements(str(self), self.cls)  # a missing extra: one line naming it

    def check(self, task_names: list[str]) -> None:
        self.build([TaskConfig(name=t, input="vector", target="regression") for t in task_names])

    def build(self, tasks: list[TaskConfig]) -> Any:
        """A new balancer for ``tasks`` (a balancer holds training state: one per joint stage)."""
        spec = self.resolve()
        return spec.cls(tasks, spec.params)


class FusionSpec(PluginSpec):
    """A fusion method (``strategy.fusion=ties``) and its parameters (``strategy.fusion_params``)."""

    kind, label, registry = "fusion method", "fusion", ("bench.fusion.base", "FUSIONS")

    def check(self, task_names: list[str]) -> None:
        self.build(len(task_names))

    def build(self, n: int) -> Any:
        """The method fusing ``n`` checkpoints (its ``validate`` checks the parameters against ``n``)."""
        spec = self.resolve()
        return spec.cls(spec.params, n)


class ArchitectureSpec(PluginSpec):
    """An architecture (``strategy.architecture=mtan``) and its parameters (``strategy.architecture_params``)."""

    kind, label, registry = "architecture", "architecture", ("bench.architectures.base", "ARCHITECTURES")

    def check(self, task_names: list[str]) -> None:
        if str(self) != "hps" or self.raw:  # the default has nothing to check (no module, no parameters)
            self.resolve()

    def build(self, shapes: Mapping[str, Any], kinds: Mapping[str, Any]) -> Any:
        """The architecture's module for the backbone's view ``shapes`` and the tasks' ``kinds`` (task -> its kind);
        None for ``hps``, which builds none (the model keeps today's state-dict keys)."""
        spec = self.resolve()
        module = importlib.import_module(self.registry[0])  # resolved: imported already
        return module.build_architecture(str(spec), spec.raw, dict(shapes), dict(kinds))


class WithArchitecture(Frozen):
    """The base of a joint strategy's ``Params`` that offers ``strategy.architecture=`` (naive_mtl, uncertainty, ...).

    At the default (``hps``, no parameters) the two fields are left out of the dump, so the records and cell hashes
    of every configuration that names no architecture stay what they were before architectures existed.

    >>> class P(WithArchitecture):
    ...     lr: float = 0.1
    >>> P().model_dump(), P(architecture="mtan").model_dump()
    ({'lr': 0.1}, {'architecture': 'mtan', 'architecture_params': {}, 'lr': 0.1})
    """

    architecture: ArchitectureSpec = ArchitectureSpec("hps")  # how the tasks share parameters (docs/architectures.md)
    architecture_params: dict[str, Any] = Field(default_factory=dict)  # e.g. {experts: 4} for mmoe

    @model_serializer(mode="wrap")
    def _default_left_out(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out = handler(self)
        if self.architecture == "hps" and not self.architecture_params:
            out.pop("architecture", None)
            out.pop("architecture_params", None)
        return out


def specs_of(params: Any) -> list[PluginSpec]:
    """The plug-in references among a model's fields (a strategy's ``Params``)."""
    return [v for f in type(params).model_fields if isinstance(v := getattr(params, f, None), PluginSpec)]
