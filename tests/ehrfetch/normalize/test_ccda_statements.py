"""Which statements of a C-CDA entry are read: the outermost ones of the kind asked for.

``_statements`` and ``_observations`` find them with lxml's own iteration; the rule they
keep is the plain walk below (test every element, do not look inside a match), checked
here on every entry of the HL7 examples and on the cases that walk order could get wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from lxml import etree

from ehrfetch.bench.ccda_coverage import as_document
from ehrfetch.normalize import ccda_entries as entries
from ehrfetch.normalize.ccda_values import CDA_NS, local, template_ids
from support import require_ccda_examples

ROOTS = sorted(
    {
        entries.PROBLEM_OBS,
        entries.ALLERGY_OBS,
        entries.MEDICATION_ACTIVITY,
        entries.IMMUNIZATION_ACTIVITY,
        entries.ENCOUNTER_ACTIVITY,
        entries.RESULT_OBS,
        entries.VITAL_SIGN_OBS,
        *entries.PROCEDURE_TEMPLATES,
    }
)


def walk(entry: etree._Element, match: Callable[[etree._Element], bool]) -> list[etree._Element]:
    """The rule: every element under the entry that matches, not looking inside a match."""
    found: list[etree._Element] = []

    def visit(el: etree._Element) -> None:
        for sub in el:
            if not isinstance(sub.tag, str):
                continue
            if match(sub):
                found.append(sub)
            else:
                visit(sub)

    visit(entry)
    return found


def has(root: str) -> Callable[[etree._Element], bool]:
    return lambda el: root in template_ids(el)


def entries_of(path: Path) -> list[etree._Element]:
    root = etree.fromstring(as_document(path.read_bytes()))
    return list(root.iter(f"{{{CDA_NS}}}entry"))


def test_every_entry_of_the_hl7_examples_yields_what_the_plain_walk_yields() -> None:
    folder = require_ccda_examples()
    paths = sorted(folder.rglob("*.xml"))
    checked = found = 0
    for path in paths:
        for entry in entries_of(path):
            for root in ROOTS:
                expected = walk(entry, has(root))
                assert entries._statements(entry, root) == expected, (path.name, root)
                found += len(expected)
            expected = walk(entry, lambda el: local(el) == "observation")
            assert entries._observations(entry) == expected, path.name
            checked += 1
    assert checked > 100 and found > 100, (checked, found)  # the examples were read (153, 192)


def entry(xml: str) -> etree._Element:
    return etree.fromstring(f'<entry xmlns="{CDA_NS}">{xml}</entry>')


ORDER = "2.16.840.1.113883.10.20.22.4.4"


@pytest.mark.parametrize(
    "xml",
    [
        # A match nested in a match is part of the outer one, read once.
        f'<act><observation><templateId root="{ORDER}"/>'
        f'<entryRelationship><observation><templateId root="{ORDER}"/></observation>'
        "</entryRelationship></observation></act>",
        # The outer statement's templateId after the nested one (document order differs).
        f'<observation><entryRelationship><observation><templateId root="{ORDER}"/>'
        f'</observation></entryRelationship><templateId root="{ORDER}"/></observation>',
        # Two templateIds of the same root on one statement (two versions): one statement.
        f'<observation><templateId root="{ORDER}"/>'
        f'<templateId root="{ORDER}" extension="2015-08-01"/></observation>',
        # Siblings in document order; a comment between them is not an element.
        f'<organizer><component><observation id="a"><templateId root="{ORDER}"/>'
        f'</observation></component><!-- note --><component><observation id="b">'
        f'<templateId root="{ORDER}"/></observation></component></organizer>',
        # The entry's own templateId is not a statement under it.
        f'<templateId root="{ORDER}"/><observation/>',
    ],
    ids=["nested", "late-template", "two-versions", "siblings", "entry-itself"],
)
def test_outermost_statements_where_walk_order_could_differ(xml: str) -> None:
    el = entry(xml)
    expected = walk(el, has(ORDER))
    assert entries._statements(el, ORDER) == expected
    assert entries._observations(el) == walk(el, lambda e: local(e) == "observation")
