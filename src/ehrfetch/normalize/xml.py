"""Parsing XML from other people's systems, safely.

Entity expansion (billion laughs), external entities and DTDs (file and network
reads), network access and huge trees are all off: a document is data, never
instructions to the parser.
"""

from __future__ import annotations

from lxml import etree

from ehrfetch.errors import UnreadableDocument

_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=True,
    remove_pis=True,
)


def parse_xml(body: bytes) -> etree._Element:
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as exc:
        # lxml's message names the line and column, not the content.
        raise UnreadableDocument(f"not well-formed XML: {exc.msg}") from None
    if root is None:
        raise UnreadableDocument("empty XML document")
    return root
