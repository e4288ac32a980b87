"""Which stored resource each of a document's resources is (or whether it is new).

A resource is the same fact as a stored one when (docs/dedup.md):

1. its ``dedup_key`` is the stored one's (same most specific code, same other parts); or
2. one of its alias keys (same other parts, one shared coding) finds a stored resource
   whose codings — every coding any of its sources sent — name the same concept
   (``normalize.dedup.same_concept``), and it finds exactly one such resource. Two
   candidates (an ICD-10-CM-only fact matching two stored SNOMED CT concepts that map
   to it) is a doubt, and in doubt a fact is stored apart, never merged.

Resources of the same document are matched against each other the same way, in
document order. A merge keeps the body stored first and adds the newcomer's lineage,
Provenance target and codings (its aliases), so the next document is checked against
everything this fact has been coded as.

``resource_alias`` holds one row per (resource, coding) — except for a resource coded
with one coding only: the alias key of that coding is the resource's own ``dedup_key``
(``normalize.dedup.fact_of``), so the resource row itself is its alias, and most
resources (a lab with its LOINC code alone) cost no alias row. One query finds, for a
whole document, the stored resources by key or by alias key with all their codings.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import String, any_, bindparam, func, null, or_, select, tuple_, union_all
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import CompoundSelect

from ehrfetch.normalize.dedup import Coding, Fact, fact_of, same_concept
from ehrfetch.store.tables import Resource, ResourceAlias, table_of


class Incoming(Protocol):
    """What is needed of a derived resource (``documents.DerivedResource``)."""

    @property
    def resource_type(self) -> str: ...
    @property
    def fhir_id(self) -> str: ...
    @property
    def dedup_key(self) -> str: ...
    @property
    def body(self) -> dict[str, Any]: ...


@dataclass(eq=False)
class Group:
    """One stored resource (``resource_id`` set) or one to insert, and what joins it."""

    resource_type: str
    fhir_id: str
    dedup_key: str
    resource_id: int | None = None
    body: dict[str, Any] | None = None
    """The body to insert; None for a resource already stored (its body stays)."""
    codings: set[Coding] = field(default_factory=set)
    """Every coding known for it: stored, and given by this document."""


@dataclass
class Resolution:
    groups: list[Group]
    """Each incoming resource's group, in order (a group appears once per member)."""
    new: list[Group]
    """Groups to insert, in order."""
    aliases: list[tuple[Group, str, Coding]]
    """(group, alias key, coding): the alias rows to write (some may be stored already)."""
    renamed: dict[str, str]
    """"Type/incoming id" → "Type/stored id" for resources merged under another id."""


def resolve(session: Session, participant_id: int, resources: Sequence[Incoming]) -> Resolution:
    """How one document's resources join what the participant has stored."""
    return resolve_documents(session, participant_id, [resources])[0]


def resolve_documents(
    session: Session, participant_id: int, documents: Sequence[Sequence[Incoming]]
) -> list[Resolution]:
    """Each document's :class:`Resolution`, as if the documents were saved one by one.

    One lookup for all of them (a participant's documents are written together); a
    document is matched against the stored resources and those of the documents before
    it, in order, exactly as it would be had those been stored first.
    """
    facts = [[fact_of(r.body) for r in resources] for resources in documents]
    flat = [r for resources in documents for r in resources]
    by_key, by_alias = _stored(session, participant_id, flat, [f for fs in facts for f in fs])
    resolutions: list[Resolution] = []
    given: list[tuple[Resolution, Group, str, Coding]] = []
    for resources, document_facts in zip(documents, facts, strict=True):
        resolution = Resolution([], [], [], {})
        resolutions.append(resolution)
        for r, fact in zip(resources, document_facts, strict=True):
            kind = r.resource_type
            group = by_key.get((kind, r.dedup_key)) or _one_candidate(kind, fact, by_key, by_alias)
            if group is None:
                group = Group(kind, r.fhir_id, r.dedup_key, body=r.body)
                resolution.new.append(group)
            # From now on the newcomer's key finds this group (a duplicate later in this
            # or a later document), and so do its aliases, with its codings for the
            # concept check.
            by_key.setdefault((kind, r.dedup_key), group)
            group.codings |= fact.codings
            for coding, alias in fact.aliases:
                entry = by_alias[(kind, alias)]
                if group not in entry:
                    entry.append(group)
                given.append((resolution, group, alias, coding))
            resolution.groups.append(group)
            if group.fhir_id != r.fhir_id:
                resolution.renamed[f"{kind}/{r.fhir_id}"] = f"{kind}/{group.fhir_id}"
    # Alias rows once every document is read: a fact coded once in the first document
    # and otherwise in a later one needs rows for all its codings.
    seen: set[tuple[int, str]] = set()
    for resolution, group, alias, coding in given:
        if group.codings == {coding} and alias == group.dedup_key:
            continue  # coded once: the resource row is this alias (module docstring)
        if (id(group), alias) not in seen:
            seen.add((id(group), alias))
            resolution.aliases.append((group, alias, coding))
    return resolutions


def _one_candidate(
    kind: str,
    fact: Fact,
    by_key: dict[tuple[str, str], Group],
    by_alias: dict[tuple[str, str], list[Group]],
) -> Group | None:
    candidates: list[Group] = []
    for _, alias in fact.aliases:
        found = [*by_alias.get((kind, alias), ())]
        if (single := by_key.get((kind, alias))) is not None:
            found.append(single)
        for group in found:
            if group not in candidates and same_concept(group.codings, fact.codings):
                candidates.append(group)
    return candidates[0] if len(candidates) == 1 else None


_RESOURCE = table_of(Resource)
_HIT = table_of(ResourceAlias).alias("hit")
_EVERY = table_of(ResourceAlias).alias("every")


def _lookup(postgresql: bool) -> CompoundSelect[Any]:
    """The stored resources of a participant with any of some keys or alias keys.

    Rows with no alias key are the resources found by key (a document's keys and alias
    keys alike: an alias key of a coding is the key of a resource coded with it alone);
    rows with one are every alias of a resource found by key or by alias — the codings
    the concept check needs. (An alias key hashes its resource type, so with the
    participant it is enough to look up.)

    Built once per dialect: a save runs it with fresh lists of keys, and building a
    statement per call cost more than running it. On PostgreSQL the lists go as arrays:
    with one parameter per key (SQLite's expanding lists) the statement's text changed
    with every participant, so psycopg converted it afresh each time (too long for its
    cache; 3 % of a batch worker's CPU in the 300,000-participant benchmark) and the
    server parsed and planned it anew.
    """
    if postgresql:
        given = (
            func.unnest(
                bindparam("types", type_=ARRAY(String)), bindparam("keys", type_=ARRAY(String))
            )
            .table_valued("resource_type", "dedup_key")
            .render_derived(name="given")
        )
        by_key = tuple_(_RESOURCE.c.resource_type, _RESOURCE.c.dedup_key).in_(
            select(given.c.resource_type, given.c.dedup_key)
        )
        by_alias = _HIT.c.alias_key == any_(bindparam("aliases", type_=ARRAY(String)))
    else:
        by_key = tuple_(_RESOURCE.c.resource_type, _RESOURCE.c.dedup_key).in_(
            bindparam("keys", expanding=True)
        )
        by_alias = _HIT.c.alias_key.in_(bindparam("aliases", expanding=True))
    keyed = (
        select(_RESOURCE.c.id)
        .where(_RESOURCE.c.participant_id == bindparam("pid"), by_key)
        .cte("keyed")
    )
    return union_all(
        select(
            _RESOURCE.c.id,
            _RESOURCE.c.resource_type,
            _RESOURCE.c.fhir_id,
            _RESOURCE.c.dedup_key,
            null().label("alias_key"),
            null().label("system"),
            null().label("code"),
        ).where(_RESOURCE.c.id.in_(select(keyed.c.id))),
        select(
            _RESOURCE.c.id,
            _RESOURCE.c.resource_type,
            _RESOURCE.c.fhir_id,
            _RESOURCE.c.dedup_key,
            _EVERY.c.alias_key,
            _EVERY.c.system,
            _EVERY.c.code,
        )
        .distinct()
        .select_from(_HIT)
        .join(_EVERY, _EVERY.c.resource_id == _HIT.c.resource_id)
        .join(_RESOURCE, _RESOURCE.c.id == _HIT.c.resource_id)
        .where(
            _HIT.c.participant_id == bindparam("pid"),
            or_(by_alias, _HIT.c.resource_id.in_(select(keyed.c.id))),
        ),
    )


_LOOKUP = {True: _lookup(postgresql=True), False: _lookup(postgresql=False)}


def _stored(
    session: Session, participant_id: int, resources: Sequence[Incoming], facts: list[Fact]
) -> tuple[dict[tuple[str, str], Group], defaultdict[tuple[str, str], list[Group]]]:
    """Stored resources by key, and by alias key, each with every coding known for it."""
    by_key: dict[tuple[str, str], Group] = {}
    by_alias: defaultdict[tuple[str, str], list[Group]] = defaultdict(list)
    coding_of: dict[tuple[str, str], Coding] = {}
    for r, fact in zip(resources, facts, strict=True):
        for coding, alias in fact.aliases:
            coding_of[(r.resource_type, alias)] = coding
    keys = {(r.resource_type, r.dedup_key) for r in resources} | set(coding_of)
    if not keys:
        return by_key, by_alias
    ordered = sorted(keys)
    aliases = sorted({alias for _, alias in coding_of})
    postgresql = session.get_bind().dialect.name == "postgresql"
    params: dict[str, Any] = (
        {"types": [t for t, _ in ordered], "keys": [k for _, k in ordered]}
        if postgresql
        else {"keys": ordered}
    )
    params.update(pid=participant_id, aliases=aliases)
    groups: dict[int, Group] = {}
    rows = session.execute(_LOOKUP[postgresql], params)
    for rid, kind, fhir_id, key, alias, system, code in rows:
        group = groups.get(rid)
        if group is None:
            group = groups[rid] = Group(kind, fhir_id, key, resource_id=rid)
        if alias is None:
            by_key[(kind, key)] = group
            # Found by key: its preferred coding is the one whose alias key is its key.
            if (implicit := coding_of.get((kind, key))) is not None:
                group.codings.add(implicit)
        else:
            group.codings.add((system, code))
            if group not in by_alias[(kind, alias)]:
                by_alias[(kind, alias)].append(group)
    return by_key, by_alias
