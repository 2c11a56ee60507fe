"""The person → household map in blocks (fangpin.store.history.encode_person_blocks): every person
lands in the block of its county and key bucket, sorted, and decodes back to its household."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pytest

from fangpin.store import history as hs


def _k(name: str) -> str:
    return hashlib.md5(name.encode()).hexdigest()


def test_blocks_hold_each_person_once_in_its_county_and_bucket():
    persons = [{"person_key": _k(f"p{i}"), "household_key": _k(f"h{i // 4}"), "county": ("甲县", "乙县")[i % 2]}
               for i in range(3000)]
    blocks = hs.encode_person_blocks(pa.Table.from_pylist(persons), "run0001")
    assert hs.person_count(blocks) == 3000 == hs.person_count(blocks.to_pylist())
    keys = list(zip(blocks.column("county").to_pylist(), blocks.column("bucket").to_pylist(), strict=True))
    assert len(set(keys)) == len(keys) and keys == sorted(keys)  # one block per county and bucket
    assert set(blocks.column("part").to_pylist()) == {"run0001"}
    back = set()
    for b in blocks.to_pylist():
        pairs = hs.decode_person_block(b["payload"])
        assert [p for p, _ in pairs] == sorted(p for p, _ in pairs)
        assert {int(p[:4], 16) >> (16 - hs.PERSON_BUCKET_BITS) for p, _ in pairs} == {b["bucket"]}
        back |= {(p, h, b["county"]) for p, h in pairs}
    assert back == {(p["person_key"], p["household_key"], p["county"]) for p in persons}
    # dicts and Arrow give the same blocks; no persons, no blocks
    assert hs.encode_person_blocks(persons, "run0001").equals(blocks)
    assert hs.encode_person_blocks([], "x").num_rows == 0


@pytest.mark.parametrize("bad", ["p0", _k("p0")[:-1] + "g", _k("p0") + "0", None])
def test_a_key_that_is_not_a_keyed_hash_is_refused_without_its_value(bad):
    persons = [{"person_key": _k("ok"), "household_key": _k("h"), "county": "甲县"},
               {"person_key": bad, "household_key": _k("h"), "county": "甲县"}]
    with pytest.raises(ValueError, match="person_key must be a keyed hash") as e:
        hs.encode_person_blocks(persons, "x")
    assert bad is None or bad not in str(e.value)


def test_uppercase_hex_is_the_same_key():
    lower = hs.encode_person_blocks([{"person_key": _k("p"), "household_key": _k("h"), "county": "甲县"}], "x")
    upper = hs.encode_person_blocks([{"person_key": _k("p").upper(), "household_key": _k("h"), "county": "甲县"}], "x")
    assert lower.equals(upper)


def test_mixed_case_keys_still_make_one_block_per_bucket():
    # in text order "0A5…" < "0B1…" < "0a5…": sorted as text, bucket 0x0a5 would be cut in two
    persons = [{"person_key": ("0a5" if i % 2 else "0A5") + _k(f"p{i}")[3:], "household_key": _k("h"),
                "county": "甲县"} for i in range(6)]
    persons.append({"person_key": "0B1" + _k("q")[3:], "household_key": _k("h"), "county": "甲县"})
    blocks = hs.encode_person_blocks(persons, "x")
    assert sorted(blocks.column("bucket").to_pylist()) == [0x0a5, 0x0b1] and hs.person_count(blocks) == 7
