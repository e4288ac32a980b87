"""ehrfetch.fhir_models: its validators answer exactly as fhir.resources' own, only sooner.

The replacements decide nothing the library would decide differently: a corpus of
resources, valid and broken in each way the two validators look for, is validated here
(replacements in effect) and in a fresh interpreter that never imports ehrfetch (the
library as shipped), and every verdict — valid, or the whole list of errors — must be
the same.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fhir_core.types import FhirBase
from pydantic import ValidationError

from ehrfetch import fhir_models
from ehrfetch.fhir_models import model_class
from ehrfetch.normalize.ccda import normalize_ccda
from ehrfetch.normalize.fhir_bundle import normalize_bundle
from mock_network.documents.generate import make_document
from mock_network.documents.model import DocSubject, DocumentMix

SRC = Path(fhir_models.__file__).parent

# What a model is made of: the class of every value in it, all the way down (the
# written-out form alone would not tell a nested model from a dict left in its place).
_SHAPE = """
def shape(value):
    if isinstance(value, list):
        return [shape(item) for item in value]
    fields = getattr(type(value), "model_fields", None)
    if fields is None:
        return type(value).__name__
    inner = {name: getattr(value, name) for name in fields}
    return {"": type(value).__name__, **{k: shape(v) for k, v in inner.items() if v is not None}}
"""
_shape_of: dict[str, Any] = {}
exec(_SHAPE, _shape_of)  # the same code in both processes  # noqa: S102

# Validates each resource of a JSON list with fhir.resources alone and prints verdicts.
_LIBRARY_ALONE = (
    _SHAPE
    + """
import json, sys
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.patient import Patient
from pydantic import ValidationError
owner = Patient.__pydantic_decorators__.model_validators["reject_null_complex_elements"]
assert owner.func.__module__ == "fhir_core.fhirabstractmodel", owner.func.__module__
verdicts = []
for body in json.load(open(sys.argv[1])):
    try:
        model = get_fhir_model_class(body["resourceType"]).model_validate(body)
        verdicts.append({"built": json.loads(model.model_dump_json()), "shape": shape(model)})
    except ValidationError as error:
        verdicts.append({"errors": error.errors(include_url=False, include_input=False)})
print(json.dumps(verdicts, default=str))
"""
)


def _verdict(body: dict[str, Any]) -> dict[str, Any]:
    """What was built (written out, and its shape) or every error, as the library does."""
    try:
        model = model_class(body["resourceType"]).model_validate(body)
    except ValidationError as error:
        # Through JSON, as the other process's verdicts come (tuples become lists).
        errors = error.errors(include_url=False, include_input=False)
        return {"errors": json.loads(json.dumps(errors, default=str))}
    return {"built": json.loads(model.model_dump_json()), "shape": _shape_of["shape"](model)}


def _documents() -> list[dict[str, Any]]:
    """Resources as ehrfetch stores them, and whole Bundles as sites send them."""
    bodies: list[dict[str, Any]] = []
    for k in range(12):
        subject = DocSubject(k, f"P{k}", "Ana", "Lee", dt.date(1940 + k, 3, 4), "female")
        fhir = make_document(subject, "org-a", "A", 7, k, DocumentMix(1, 0, 0, 0)).body
        ccda = make_document(subject, "org-a", "A", 7, k, DocumentMix(0, 1, 0, 0)).body
        bodies.append(json.loads(fhir))
        for normalized in (
            normalize_bundle(fhir, research_id="R1", patient_id=None),
            normalize_ccda(ccda, research_id="R1", patient_id=None),
        ):
            bodies.extend(resource.body for resource in normalized.resources)
    return bodies


def _nulls_in_lists(body: dict[str, Any]) -> list[dict[str, Any]]:
    """One variant per list of objects anywhere in ``body``: a null put into it."""
    variants = []

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, (*path, key))
        elif isinstance(node, list):
            if node and all(isinstance(item, dict) for item in node):
                variant = copy.deepcopy(body)
                target: Any = variant
                for step in path:
                    target = target[step]
                target.insert(len(target) // 2, None)
                variants.append(variant)
            for index, item in enumerate(node):
                walk(item, (*path, index))

    walk(body, ())
    return variants


def _broken(bodies: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    kinds: dict[str, list[dict[str, Any]]] = {
        "null in a list": [],
        "required primitive missing": [],
        "required primitive only as an extension": [],
        "two types of one choice": [],
        "no type of a required choice": [],
    }
    for body in bodies:
        kinds["null in a list"].extend(_nulls_in_lists(body)[:6])
        if "status" in body:
            missing = {k: v for k, v in body.items() if k != "status"}
            kinds["required primitive missing"].append(missing)
            absent = {"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason"}
            kinds["required primitive only as an extension"].append(
                {**missing, "_status": {"extension": [{**absent, "valueCode": "unknown"}]}}
            )
        if body["resourceType"] == "Observation":
            kinds["two types of one choice"].append(
                {**body, "valueString": "x", "valueBoolean": True}
            )
        choice = [k for k in body if k.startswith("medication") and k != "medication"]
        if body["resourceType"] in {"MedicationStatement", "MedicationRequest"} and choice:
            kinds["no type of a required choice"].append(
                {k: v for k, v in body.items() if k not in choice}
            )
    return kinds


def test_every_verdict_is_the_librarys(tmp_path: Path) -> None:
    valid = _documents()
    broken = _broken(valid)
    for kind, variants in broken.items():
        assert len(variants) >= 5, f"the corpus has too few of {kind!r}"
    corpus = valid + [body for variants in broken.values() for body in variants]
    (tmp_path / "corpus.json").write_text(json.dumps(corpus))

    ours = [_verdict(body) for body in corpus]
    shipped = subprocess.run(
        [sys.executable, "-c", _LIBRARY_ALONE, str(tmp_path / "corpus.json")],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    theirs = json.loads(shipped.stdout)

    assert len(theirs) == len(ours)
    mismatched = [i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b]
    assert not mismatched, (corpus[mismatched[0]], ours[mismatched[0]], theirs[mismatched[0]])
    # The corpus exercises both answers of every check: the valid pass, each break fails
    # except a missing primitive whose extension says why (FHIR allows that).
    assert all("built" in verdict for verdict in ours[: len(valid)])
    at = len(valid)
    for kind, variants in broken.items():
        verdicts = ours[at : at + len(variants)]
        at += len(variants)
        if kind == "required primitive only as an extension":
            assert all("built" in verdict for verdict in verdicts), kind
        else:
            assert all("errors" in verdict for verdict in verdicts), kind


def test_a_null_in_a_list_of_codings_is_refused_where_it_is() -> None:
    condition = {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"code": "a"}, None]},
    }
    with pytest.raises(ValidationError) as caught:
        model_class("Condition").model_validate(condition)
    assert caught.value.errors()[0]["loc"][:2] == ("code", "coding")


@pytest.mark.parametrize("kind", ["Patient", "Observation", "Bundle", "DocumentReference"])
def test_the_classes_ehrfetch_uses_carry_the_replacements(kind: str) -> None:
    validators = model_class(kind).__pydantic_decorators__.model_validators
    assert validators["reject_null_complex_elements"].func.__module__ == fhir_models.__name__
    assert validators["validate_after_model_construction"].func.__module__ == (fhir_models.__name__)
    # Every element type's validator (looked up at each call, so set once on the base).
    assert FhirBase.__dict__["fhir_model_validator"].__func__ is fhir_models.fhir_model_validator


def test_the_replacements_come_first_in_a_fresh_process() -> None:
    # What a batch worker imports; a module that built an R4B class before fhir_models
    # was imported would leave that class with the library's (slower) validators.
    probe = (
        "import ehrfetch.cli, ehrfetch.batch\n"
        "import sys\n"
        "built = [m for m in sys.modules if m.startswith('fhir.resources.R4B.')]\n"
        "from ehrfetch.fhir_models import model_class\n"
        "for name in built:\n"
        "    for cls in vars(sys.modules[name]).values():\n"
        "        v = getattr(cls, '__pydantic_decorators__', None)\n"
        "        if not v or cls.__module__.startswith('fhir_core.'):\n"
        "            continue  # the library's base classes, built before any R4B one\n"
        "        if 'reject_null_complex_elements' in v.model_validators:\n"
        "            f = v.model_validators['reject_null_complex_elements'].func\n"
        "            assert f.__module__ == 'ehrfetch.fhir_models', (name, cls)\n"
        "print(len(built))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) > 0


def test_only_fhir_models_imports_fhir_resources() -> None:
    pattern = re.compile(r"(from|import)\s+fhir\.resources|\"fhir\.resources\.R4B\.")
    offenders = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if path.name != "fhir_models.py" and pattern.search(path.read_text())
    ]
    assert offenders == []
