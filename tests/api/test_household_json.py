"""The canonical JSON form → the canonical tables the feature code reads (the one conversion,
models.features.frames_from_records, as the API calls it): columns, ages, events, no full IDs."""

from __future__ import annotations

from fangpin.contract import HOUSEHOLD_FIELDS
from fangpin.household_json import HouseholdIn, example_household, normalise_households
from models.features import frames_from_records


def parse_households(households: list) -> list:
    """As the API reads them: ingest's normaliser, then the schema."""
    return [HouseholdIn.model_validate(h) for h in normalise_households(households)]


def test_validated_households_become_the_canonical_tables_without_full_ids():
    raw = example_household()
    h = HouseholdIn.model_validate(raw)
    fr, sources = frames_from_records([h.model_dump()], {2024: 6000.0})
    assert sources == ["none"]  # no history given
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


def test_every_value_form_of_the_contract_is_read_as_ingest_reads_it():
    """Ledger cells as the files hold them (grade-level school values, 是/否, full-width digits,
    thousands separators, the contract's date forms, 性别 1/2, a lower-case quarter) validate to
    the same canonical values as the canonical form."""
    from fangpin.household_json import normalise_households

    canon = example_household()
    raw = example_household()
    raw.update(quarter="2024q2", income_per_capita="８,１２０.５", wage_income="18,000", unsafe_housing="否",
               safe_water="是", farmland_mu="３.５", monitor_category="—")
    head, spouse, son = raw["members"]
    head.update(sex="1", work_months="８", medical_insured="是", birth_date="1968年3月15日")
    spouse.update(sex="女", medical_insured=" 是 ", birth_date="1970/8/22")
    son.update(school_status="中职二年级", school_grade=None, birth_date="20070509")
    raw["events"][0].update(event_date="2024/4/20", amount="6,800")
    canon["members"][0]["birth_date"] = "1968-03-15"
    canon["members"][1]["birth_date"] = "1970-08-22"
    canon["members"][2]["birth_date"] = "2007-05-09"
    a, b = parse_households([raw]), parse_households([canon])
    assert a[0].model_dump() == b[0].model_dump()
    assert a[0].members[2].school_status == "中职" and a[0].members[2].school_grade == 2
    # grade-level values of the other stages, as ingest normalises them
    raw["members"][2].update(school_status="八年级", school_grade=None)
    got = normalise_households([raw])[0]["members"][2]
    assert (got["school_status"], got["school_grade"]) == ("初中", 8)
    assert raw["members"][2]["school_status"] == "八年级"  # the input is not changed


def test_unreadable_values_are_reported_with_their_path():
    import pytest
    from pydantic import ValidationError

    from fangpin.household_json import errors_zh

    raw = example_household()
    raw["income_per_capita"] = "八千"
    raw["events"][0]["event_date"] = "2024-13-40"
    with pytest.raises(ValidationError) as exc:
        parse_households([raw])
    paths = {e["path"] for e in errors_zh(exc.value.errors())}
    assert {"income_per_capita", "events[0].event_date"} <= paths
