"""Matplotlib set-up shared by reports and the review notebook: a CJK font, so Chinese labels
render as text rather than boxes, and the Agg backend for scripts and pipeline stages — but never
in place of a notebook's inline backend, so the review notebook shows its figures in Jupyter (and
saves them as PNGs too when asked). The font comes from Debian's fonts-noto-cjk, installed by
`make system-deps`."""

from __future__ import annotations

CJK_FAMILIES = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Serif CJK SC", "WenQuanYi Zen Hei")
# backends that draw into a notebook (matplotlib-inline, ipympl, nbagg): kept as they are
NOTEBOOK_BACKENDS = ("inline", "ipympl", "widget", "nbagg")


class NoCJKFont(RuntimeError):
    pass


def notebook_backend_active() -> bool:
    """True when matplotlib's selected backend draws into a notebook (e.g. Jupyter's inline one,
    which ipykernel selects through MPLBACKEND when the kernel starts)."""
    import os

    import matplotlib

    backend = matplotlib.get_backend(auto_select=False) or os.environ.get("MPLBACKEND") or ""
    return any(k in backend.lower() for k in NOTEBOOK_BACKENDS)


def setup_matplotlib() -> str:
    """Select the first installed CJK font (and the Agg backend unless a notebook backend is
    active); return the font family name."""
    import matplotlib

    if not notebook_backend_active():
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
