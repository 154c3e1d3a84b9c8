"""The Block Blob protocol's pure parts: block ids, the Put Block List body, the Get Block List body."""

from __future__ import annotations

import base64
from xml.etree import ElementTree

import pytest

from functions.api.blobs import block_list_xml, parse_block_list
from shared.storage.blocks import MAX_BLOCK_ID_BYTES, Block, BlockRejected, decode_block_id


def encoded(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


@pytest.mark.parametrize("raw", [b"\x00", b"block-1", b"0" * 48, bytes(range(64))])
def test_block_ids_of_1_to_64_bytes_decode(raw: bytes) -> None:
    assert decode_block_id(encoded(raw)) == raw


@pytest.mark.parametrize(
    "block_id",
    [
        "",
        "not base64!",
        "YWJj ZA==",
        "YWJjZA",  # padding missing: not canonical
        "YWJjZB==",  # non-zero trailing bits: another spelling of "abcd"
        "YW-jZA==",  # the URL-safe alphabet is not Azure's
    ],
)
def test_malformed_block_ids_are_refused(block_id: str) -> None:
    with pytest.raises(BlockRejected) as rejected:
        decode_block_id(block_id)
    assert rejected.value.status_code == 400
    assert rejected.value.code == "InvalidQueryParameterValue"


def test_block_ids_over_64_bytes_are_out_of_range() -> None:
    with pytest.raises(BlockRejected) as rejected:
        decode_block_id(encoded(b"x" * (MAX_BLOCK_ID_BYTES + 1)))
    assert rejected.value.code == "OutOfRangeInput"


def test_block_list_body_keeps_kinds_and_order() -> None:
    body = (
        b'<?xml version="1.0" encoding="utf-8"?>\n<BlockList>\n'
        b"  <Latest>QUFB</Latest>\n  <Committed>QkJC</Committed>\n"
        b"  <Uncommitted> Q0ND </Uncommitted>\n  <Latest>QUFB</Latest>\n</BlockList>"
    )
    assert parse_block_list(body) == [
        ("Latest", "QUFB"),
        ("Committed", "QkJC"),
        ("Uncommitted", "Q0ND"),
        ("Latest", "QUFB"),
    ]
    assert parse_block_list(b"<BlockList/>") == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"<BlockList><Latest>QUFB</Latest>", "InvalidXmlDocument"),
        (b"not xml at all", "InvalidXmlDocument"),
        (b"<Blocks><Latest>QUFB</Latest></Blocks>", "InvalidXmlDocument"),
        (b"<BlockList><Latest><Name>QUFB</Name></Latest></BlockList>", "InvalidXmlDocument"),
        (b"<BlockList><Newest>QUFB</Newest></BlockList>", "InvalidBlockList"),
        (b"<BlockList><latest>QUFB</latest></BlockList>", "InvalidBlockList"),
    ],
)
def test_malformed_block_lists_are_refused(body: bytes, code: str) -> None:
    with pytest.raises(BlockRejected) as rejected:
        parse_block_list(body)
    assert rejected.value.status_code == 400
    assert rejected.value.code == code


def test_block_list_with_entities_is_refused_before_expansion() -> None:
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE BlockList [<!ENTITY a "QUFB">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><BlockList><Latest>&b;</Latest></BlockList>'
    )
    with pytest.raises(BlockRejected) as rejected:
        parse_block_list(laughs)
    assert rejected.value.code == "InvalidXmlDocument"


def test_get_block_list_body_lists_what_was_asked() -> None:
    committed = [Block("QUFB", 4), Block("QkJC", 0)]
    uncommitted = [Block("Q0ND", 7)]

    both = ElementTree.fromstring(block_list_xml(committed=committed, uncommitted=uncommitted))
    assert both.tag == "BlockList"
    assert [(b.findtext("Name"), b.findtext("Size")) for b in both.iterfind("CommittedBlocks/Block")] == [
        ("QUFB", "4"),
        ("QkJC", "0"),
    ]
    assert [b.findtext("Name") for b in both.iterfind("UncommittedBlocks/Block")] == ["Q0ND"]

    only_committed = ElementTree.fromstring(block_list_xml(committed=[], uncommitted=None))
    assert only_committed.find("CommittedBlocks") is not None
    assert only_committed.find("UncommittedBlocks") is None
