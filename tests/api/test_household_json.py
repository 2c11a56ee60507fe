"""The canonical JSON form → canonical tables (docs/data-model.md): columns, hashing, masking."""

from __future__ import annotations

from fangpin.contract import HOUSEHOLD_FIELDS
from fangpin.household_json import HouseholdIn, example_household, to_frames
from fangpin.ids import keyed_hash


def test_to_frames_builds_the_canonical_tables_without_full_ids():
    raw = example_household()
    h = HouseholdIn.model_validate(raw)
    fr = to_frames([h], b"k")
    hh, persons, events = fr["households"], fr["persons"], fr["events"]
    assert len(hh) == 1 and set(HOUSEHOLD_FIELDS) <= set(hh.columns)
    assert hh.loc[0, "n_members"] == 3 and hh.loc[0, "quarter_idx"] == 2024 * 4 + 1
    ids = [m["id_number"] for m in raw["members"]]
    assert list(persons["person_key"]) == [keyed_hash(i, b"k") for i in ids]
    assert list(persons["age"]) == [56, 53, 17] and persons.loc[2, "school_status"] == "中职"
    assert "id_number" not in persons.columns and "id_number" not in events.columns
    text = hh.to_csv() + persons.to_csv() + events.to_csv()
    assert not any(i in text for i in ids) and persons.loc[0, "id_masked"] == ids[0][:4] + "*" * 10 + ids[0][-4:]
    assert events.loc[0, "person_key"] == persons.loc[0, "person_key"] and events.loc[0, "quarter"] == "2024Q2"
