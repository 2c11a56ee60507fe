"""fangpin.ids: GB 11643 check character, vectorised checksum, masking, keyed hash and key loading."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fangpin import ids

# GB 11643-1999's worked example: the 17 digits below have check character X (a known answer, so
# the checksum is not only tested against itself). The full number is assembled at run time: no
# 18-character ID is written in the repository.
EXAMPLE17 = "11010519491231002"
EXAMPLE = EXAMPLE17 + "X"


def test_check_char_known_answer():
    assert ids.check_char(EXAMPLE17) == "X"

digits17 = st.text(alphabet="0123456789", min_size=17, max_size=17)


def _id(first17: str) -> str:
    return first17 + ids.check_char(first17)


def test_known_check_character():
    # worked example of GB 11643-1999: 11010519491231002 → X
    assert ids.check_char("11010519491231002") == "X"
    assert ids.checksum_ok(EXAMPLE) and ids.checksum_ok(EXAMPLE.lower())
    assert not ids.checksum_ok(EXAMPLE17 + "0")


@given(digits17)
def test_generated_ids_validate_and_any_other_check_char_fails(first17):
    good = _id(first17)
    assert ids.checksum_ok(good)
    for c in "0123456789X":
        if c != good[-1]:
            assert not ids.checksum_ok(first17 + c)


@given(st.lists(st.one_of(digits17.map(_id), digits17.map(lambda d: d + "0"), st.text(max_size=20)), max_size=30))
def test_series_agrees_with_scalar(values):
    s = pd.Series(values + [None], dtype="object")
    got = ids.checksum_ok_series(s).tolist()
    assert got == [ids.checksum_ok(v) for v in values] + [False]


@pytest.mark.parametrize("value,masked", [
    (EXAMPLE, "1101**********002X"), ("123456789", "1234*6789"), ("12345678", "********"),
    ("abc", "***"), (None, None),
])
def test_mask(value, masked):
    assert ids.mask(value) == masked
    got = ids.mask_series(pd.Series([value], dtype="str")).tolist()[0]
    assert (None if pd.isna(got) else got) == masked


def test_keyed_hash_depends_on_key_and_normalises_case():
    a = ids.keyed_hash(EXAMPLE, b"k1")
    assert a == ids.keyed_hash(f" {EXAMPLE.lower()} ", b"k1")
    assert a != ids.keyed_hash(EXAMPLE, b"k2")
    assert len(a) == 32 and EXAMPLE not in a
    assert a == hmac.new(b"k1", EXAMPLE.encode("utf-8"), hashlib.sha256).hexdigest()[:32]
    assert ids.keyed_hashes([EXAMPLE, f" {EXAMPLE.lower()}"], b"k1") == [a, a]


def test_load_key_from_env_or_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FANGPIN_TEST_KEY", "from-env")
    assert ids.load_key(tmp_path, env="FANGPIN_TEST_KEY") == b"from-env"
    monkeypatch.delenv("FANGPIN_TEST_KEY")
    k = ids.load_key(tmp_path / "state", env="FANGPIN_TEST_KEY")
    f = tmp_path / "state" / "id_key"
    assert f.exists() and len(k) == 64
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    assert ids.load_key(tmp_path / "state", env="FANGPIN_TEST_KEY") == k  # stable across calls
