"""API keys are remembered briefly after a successful check: a revocation through the same store
takes effect at once, one made by another process within ``key_cache_s`` seconds."""

from __future__ import annotations

import fangpin.store.repo as repo
from fangpin.store import Store


def test_revocation_elsewhere_takes_effect_when_the_cache_expires(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(repo.time, "monotonic", lambda: clock[0])
    url = f"sqlite:///{tmp_path / 'w.db'}"
    api = Store(url, b"secret", migrate=True, key_cache_s=5.0)
    cli = Store(url, b"secret")  # another process: `fangpin keys revoke`
    info, key = api.add_key("county_system", "甲县")
    assert api.verify_key(key).id == info.id and api.cached_key(key).id == info.id
    assert api.cached_key(key[:-2] + "zz") is None and api.verify_key(key[:-2] + "zz") is None
    cli.revoke_key(info.id)
    clock[0] += 4.9
    assert api.verify_key(key) is not None  # still remembered
    clock[0] += 0.2
    assert api.cached_key(key) is None and api.verify_key(key) is None
    api.dispose()
    cli.dispose()


def test_revocation_through_the_same_store_is_immediate_and_zero_disables_the_cache(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    api = Store(url, b"secret", migrate=True)
    info, key = api.add_key("county_system", "甲县")
    assert api.verify_key(key) is not None
    api.revoke_key(info.id)
    assert api.verify_key(key) is None
    nocache = Store(url, b"secret", key_cache_s=0)
    _, key2 = nocache.add_key("analyst", "甲县")
    assert nocache.verify_key(key2) is not None and nocache.cached_key(key2) is None
    api.dispose()
    nocache.dispose()
