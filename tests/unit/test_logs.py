import logging

from fangpin.ids import check_char
from fangpin.logs import RedactIds, redact


def _fake_id() -> str:
    first17 = "61092319800101123"
    return first17 + check_char(first17)


def test_redact_masks_full_ids_only():
    full = _fake_id()
    out = redact(f"row 12: {full} bad; household 610923003000000 ok")
    assert full not in out
    assert out.startswith("row 12: 6109**********")
    assert "610923003000000" in out  # 15-digit household ids are not personal data


def test_filter_applies_to_formatted_args(caplog):
    logger = logging.getLogger("fangpin.test")
    logger.addFilter(RedactIds())
    full = _fake_id()
    with caplog.at_level(logging.INFO, logger="fangpin.test"):
        logger.info("id %s", full)
    assert full not in caplog.text
