"""Resident ID numbers: checksum, keyed hash for joins, masked form for display.

The full number is personal data. Code keeps it only long enough to hash and mask it; joins use
the keyed hash (HMAC-SHA256 with a key from the environment or a local key file, never from the
repo), cadre-facing output uses the masked form (first 4 and last 4 characters).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"

# The one definition of "a resident ID number written in free text": 18 characters (17 digits and
# a digit or X), possibly grouped by spaces or dashes ("610923 19680315 2150", "6109-2319-…").
# RE2-compatible (no look-arounds), so Arrow compute can use it too; it matches inside longer digit
# runs on purpose (stricter).
_SEP = "[ \\-\u3000]"  # a space, a dash or an ideographic space (a literal character: RE2 has no \\u)
ID_IN_TEXT = r"\d(?:" + _SEP + r"?\d){16}" + _SEP + r"?[\dXx]"
# A mainland mobile number (11 digits from 13–19, optionally +86 and grouped by spaces or dashes).
# Python re only: the look-arounds keep it from firing inside longer digit runs (household ids).
PHONE_IN_TEXT = r"(?<![0-9])(?:\+?86" + _SEP + r"?)?1[3-9]\d(?:" + _SEP + r"?\d){8}(?![0-9])"
_ID_RE = re.compile(ID_IN_TEXT)
_PERSONAL_NUMBER_RE = re.compile(f"{ID_IN_TEXT}|{PHONE_IN_TEXT}")


def contains_id_number(text: object) -> bool:
    """Whether ``text`` holds something shaped like a full resident ID (also with spaces/dashes)."""
    return bool(text) and _ID_RE.search(str(text)) is not None


def contains_personal_number(text: object) -> bool:
    """Whether ``text`` holds a full resident ID or a mobile phone number (free text from users)."""
    return bool(text) and _PERSONAL_NUMBER_RE.search(str(text)) is not None


def redact_numbers(text: str) -> str:
    """``text`` with every ID number and phone number replaced by its masked form (first 4 and
    last 4 characters, separators dropped)."""
    return _PERSONAL_NUMBER_RE.sub(lambda m: mask(re.sub(r"[^0-9Xx]", "", m.group(0))), text)



def checksum_ok(id_number: str) -> bool:
    """GB 11643-1999 check character of an 18-character resident ID."""
    if len(id_number) != 18 or not id_number[:17].isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(id_number[:17], _WEIGHTS, strict=False))
    return _CHECK[total % 11] == id_number[17].upper()


def check_char(first17: str) -> str:
    """The check character that completes 17 digits (used by the synthetic generator)."""
    return _CHECK[sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=False)) % 11]


def checksum_ok_series(ids: pd.Series) -> pd.Series:
    """Vectorised :func:`checksum_ok` for a string Series (NaN → False)."""
    s = ids.fillna("").astype(str)
    well_formed = s.str.fullmatch(r"\d{17}[\dXx]")
    out = pd.Series(False, index=s.index)
    if not well_formed.any():
        return out
    good = s[well_formed]
    digits = np.frombuffer("".join(good.str[:17]).encode("ascii"), dtype=np.uint8).reshape(-1, 17) - 48
    total = (digits * np.array(_WEIGHTS)).sum(axis=1) % 11
    expected = np.array(list(_CHECK))[total]
    out[well_formed] = expected == good.str[17].str.upper().to_numpy()
    return out


def mask(id_number: str | None) -> str | None:
    """First 4 and last 4 characters, the rest replaced by *."""
    if id_number is None or (isinstance(id_number, float) and np.isnan(id_number)):
        return None
    s = str(id_number)
    if len(s) <= 8:
        return "*" * len(s)
    return s[:4] + "*" * (len(s) - 8) + s[-4:]


def mask_series(ids: pd.Series) -> pd.Series:
    s = ids.astype("string")
    n = s.str.len()
    stars = n.sub(8).clip(lower=0).map(lambda k: "*" * int(k) if pd.notna(k) else None).astype("string")
    masked = s.str[:4] + stars + s.str[-4:]
    return masked.where(n > 8, s.str.replace(r".", "*", regex=True))


def load_key(state_dir: Path, env: str = "FANGPIN_ID_KEY", key_file: str = "id_key") -> bytes:
    """The hashing key: from the environment if set, else from <state_dir>/<key_file>, created
    with 32 random bytes on first use (mode 0600)."""
    val = os.environ.get(env)
    if val:
        return val.encode("utf-8")
    path = Path(state_dir) / key_file
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32).encode("ascii")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


def keyed_hash(id_number: str, key: bytes) -> str:
    """Stable pseudonymous key for joins: HMAC-SHA256, hex, first 32 characters."""
    return keyed_hashes([id_number], key)[0]


def keyed_hashes(values: Iterable[str], key: bytes) -> list[str]:
    """:func:`keyed_hash` for many values: the keyed HMAC state is built once and copied per value
    instead of being re-derived from the key every time (ingest hashes millions of IDs)."""
    base = hmac.new(key, digestmod=hashlib.sha256)
    out = []
    for v in values:
        h = base.copy()
        h.update(v.strip().upper().encode("utf-8"))
        out.append(h.hexdigest()[:32])
    return out


def params_key(params) -> bytes:
    """The key as configured by a :class:`fangpin.config.Params`."""
    return load_key(params.paths.state_dir, params.ids.key_env, params.ids.key_file)


def event_key(person_key: str, event_date, department: str | None, event_type: str, amount) -> str:
    """The identity of a department event: the same event (person, date, department, type,
    amount) sent twice has the same key, so it is stored and counted once."""
    amt = "" if amount is None or (isinstance(amount, float) and np.isnan(amount)) else f"{float(amount):.2f}"
    day = event_date.isoformat()[:10] if hasattr(event_date, "isoformat") else str(event_date)[:10]
    text = f"{person_key}|{day}|{department or ''}|{event_type}|{amt}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
