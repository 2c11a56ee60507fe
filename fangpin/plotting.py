"""Matplotlib set-up shared by reports and the review notebook: Agg backend and a CJK font, so
Chinese labels render as text rather than boxes. The font comes from Debian's fonts-noto-cjk,
installed by `make system-deps`."""

from __future__ import annotations

CJK_FAMILIES = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Serif CJK SC", "WenQuanYi Zen Hei")


class NoCJKFont(RuntimeError):
    pass


def setup_matplotlib() -> str:
    """Select the Agg backend and the first installed CJK font; return the family name."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import font_manager, rcParams

    installed = {f.name for f in font_manager.fontManager.ttflist}
    if not installed.intersection(CJK_FAMILIES):
        # matplotlib's font cache may predate the font's installation: register the files directly.
        for path in font_manager.findSystemFonts():
            if "CJK" in path:
                font_manager.fontManager.addfont(path)
        installed = {f.name for f in font_manager.fontManager.ttflist}
    for family in CJK_FAMILIES:
        if family in installed:
            rcParams["font.family"] = "sans-serif"
            rcParams["font.sans-serif"] = [family, "DejaVu Sans"]
            rcParams["axes.unicode_minus"] = False
            return family
    raise NoCJKFont(
        "no CJK font found for Chinese plot labels; install Debian's fonts-noto-cjk (make system-deps)"
    )
