"""The FHIR model classes ehrfetch validates with, and the cost of three of their validators.

fhir.resources 8.x defaults to FHIR R5 and has no R4 package, so R4 data is validated
with its ``R4B`` models (wire-compatible with R4 for the resources ehrfetch handles).
Every module of ehrfetch gets its model classes here (``model_class``, ``Patient``),
never from ``fhir.resources`` directly, because of what this module does first.

**Three validators, made cheaper.** Every FHIR model in fhir.resources inherits two
model validators from ``fhir_core``'s ``FHIRAbstractModel``, and they run for every
element of every resource (each Coding, each CodeableConcept, each Reference …):

* ``reject_null_complex_elements`` (before) walks *all* of the class's fields and asks
  of each whether it is a list of a complex type — a question whose answer depends on
  the class only — to find a ``null`` inside such a list;
* ``validate_after_model_construction`` (after) calls the class's
  ``get_required_fields()`` and ``get_one_of_many_fields()``, which build the same
  list and dict literals on every call, and looks each field up in ``model_fields``.

And every element is built through ``fhir_core``'s ``FhirBase.fhir_model_validator``,
which goes through pydantic's ``model_validate`` wrapper and then checks the class and
resource type of what it built; for a dict that becomes an instance of exactly the
expected class those checks hold by construction, so that case calls the class's
validator directly and everything else goes to the library's code.

Measured by ``ehrfetch bench throughput``'s "validation alone" row (the same resources,
one core; ``docs/benchmarks.md``, thirteenth session): 8,436–8,870 resources/s as
shipped, 13,496–14,756/s with the replacements; in a batch worker these validators were
~15 % of the CPU.

The replacements work out the class-only part once per class and keep the rest; and
whenever they see something the library would refuse (a null in a complex list, a
required primitive without a value, a choice element given none or more than one of
its types) they hand that model to the library's own code, so every error — its type,
location, message and order — is the library's. What they answer alone is only "nothing
to refuse here", which they decide by the library's own test: ``tests/ehrfetch/
test_fhir_models.py`` validates a corpus, valid and broken, in a process without them
and compares every verdict.

Pydantic binds a model validator when it builds a class, looking it up by name through
the class's bases, so the replacements must be in place before the R4B classes are
built; fhir.resources builds them lazily, on first import of each, and this module is
imported before any of them (``test_fhir_models`` checks that they are in effect). A
class built earlier keeps the library's validators: slower, never different.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhir_core.fhirabstractmodel import FHIRAbstractModel
from fhir_core.types import FhirBase
from fhir_core.utils import is_list_type, is_primitive_type

_library_reject_null = FHIRAbstractModel.__dict__["reject_null_complex_elements"].__func__
_library_after = FHIRAbstractModel.__dict__["validate_after_model_construction"]
_library_element = FhirBase.__dict__["fhir_model_validator"].__func__

# The per-class answers: (name, alias) of each list-of-complex-type field, and for the
# after-validator (field names of the required primitives, (choice fields, required)).
_complex_lists: dict[type, tuple[tuple[str, str | None], ...]] = {}
_after_plans: dict[type, tuple[tuple[str, ...], tuple[tuple[tuple[str, ...], bool], ...]]] = {}


def _complex_lists_of(cls: type[FHIRAbstractModel]) -> tuple[tuple[str, str | None], ...]:
    # The library's own test, field by field (fhir_core's reject_null_complex_elements).
    fields = tuple(
        (name, field.alias)
        for name, field in cls.model_fields.items()
        if is_list_type(field) and not is_primitive_type(field) and not name.endswith("__ext")
    )
    _complex_lists[cls] = fields
    return fields


def reject_null_complex_elements(cls: type[FHIRAbstractModel], data: Any) -> Any:
    """The library's check, with the class-only part worked out once per class."""
    if not isinstance(data, dict):
        return data
    fields = _complex_lists.get(cls)
    if fields is None:
        fields = _complex_lists_of(cls)
    for name, alias in fields:
        value = data.get(alias if alias and alias in data else name)
        if isinstance(value, list) and any(item is None for item in value):
            return _library_reject_null(cls, data)  # raises the library's error
    return data


def _after_plan_of(
    model: FHIRAbstractModel,
) -> tuple[tuple[str, ...], tuple[tuple[tuple[str, ...], bool], ...]]:
    cls = type(model)
    aliases = cls.get_alias_mapping()
    required = tuple(aliases[name] for name, _ext in model.get_required_fields())
    choices = tuple(
        (
            tuple(fields),
            cls.model_fields[fields[0]].json_schema_extra["one_of_many_required"] is True,  # type: ignore[index]
        )
        for fields in model.get_one_of_many_fields().values()
    )
    plan = (required, choices)
    _after_plans[cls] = plan
    return plan


def validate_after_model_construction(self: FHIRAbstractModel) -> FHIRAbstractModel:
    """The library's two after-checks; anything they might refuse goes to the library."""
    plan = _after_plans.get(type(self))
    if plan is None:
        plan = _after_plan_of(self)
    required, choices = plan
    for field in required:
        if getattr(self, field, None) is None:
            # A missing value may still be allowed by an extension: the library decides.
            return _library_after(self)  # type: ignore[no-any-return]
    for fields in choices:
        given = sum(1 for field in fields[0] if getattr(self, field, None) is not None)
        if given > 1 or (fields[1] and given == 0):
            return _library_after(self)  # type: ignore[no-any-return]
    return self


def fhir_model_validator(
    cls: type[FhirBase], value: Any, model_klass: type[FHIRAbstractModel]
) -> Any:
    """The library's element validator, minus its wrapper and checks where they hold."""
    if value.__class__ is dict:
        made = model_klass.__pydantic_validator__.validate_python(value)
        if made.__class__ is model_klass:
            return made  # the class and so the resource type are the expected ones
        value = made
    return _library_element(cls, value, model_klass)


# The methods pydantic finds by name when it builds each R4B class (see the docstring).
FHIRAbstractModel.reject_null_complex_elements = classmethod(reject_null_complex_elements)  # type: ignore[method-assign,assignment]
FHIRAbstractModel.validate_after_model_construction = validate_after_model_construction  # type: ignore[method-assign,assignment]
# Looked up on the class at each call (FhirElementOrResourceBase keeps its own).
FhirBase.fhir_model_validator = classmethod(fhir_model_validator)  # type: ignore[method-assign,assignment]

# Only now may the R4B classes be built.
from fhir.resources.R4B import get_fhir_model_class  # noqa: E402
from fhir.resources.R4B.patient import Patient  # noqa: E402

if TYPE_CHECKING:
    from pydantic import BaseModel


def model_class(resource_type: str) -> type[BaseModel]:
    """The R4B model class of ``resource_type`` (ValueError if none; cached)."""
    return get_fhir_model_class(resource_type)


__all__ = ["Patient", "model_class"]
