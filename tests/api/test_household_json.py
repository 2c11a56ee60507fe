"""The canonical JSON form → the canonical tables the feature code reads (the one conversion,
models.features.frames_from_records, as the API calls it): columns, ages, events, no full IDs."""

from __future__ import annotations

from fangpin.contract import HOUSEHOLD_FIELDS
from fangpin.household_json import HouseholdIn, example_household
from models.features import frames_from_records
from serving.scoring import records


def test_validated_households_become_the_canonical_tables_without_full_ids():
    raw = example_household()
    h = HouseholdIn.model_validate(raw)
    fr = frames_from_records(records([h]), {2024: 6000.0})
    hh, persons, events = fr.households, fr.persons, fr.events
    assert len(hh) == 1 and set(HOUSEHOLD_FIELDS) <= set(hh.columns)
    assert hh["n_members"][0] == 3 and hh["quarter_idx"][0] == 2024 * 4 + 1
    assert list(persons["age"]) == [56, 53, 17] and persons["school_status"][2] == "中职"
    assert "id_number" not in persons.columns and "name" not in persons.columns
    assert "id_number" not in events.columns
    ids = [m["id_number"] for m in raw["members"]]
    text = repr([list(t[c]) for t in (hh, persons, events) for c in t.columns])
    assert not any(i in text for i in ids)
    assert len(events) == len(raw["events"]) and set(events["quarter_idx"]) == {2024 * 4 + 1}
