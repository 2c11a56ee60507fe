import warnings

from fangpin.plotting import setup_matplotlib


def test_chinese_labels_render_without_missing_glyphs(tmp_path):
    family = setup_matplotlib()
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.set_title("召回率：规则与模型")
    ax.bar(["规则", "模型", "综合"], [0.3, 0.5, 0.55])
    with warnings.catch_warnings():
        # matplotlib warns "Glyph ... missing from font(s)" when it would draw a box
        warnings.filterwarnings("error", message=".*[Gg]lyph.*missing.*")
        fig.savefig(tmp_path / "cjk.png", dpi=60)
    plt.close(fig)
    assert "CJK" in family or "WenQuanYi" in family
    assert (tmp_path / "cjk.png").stat().st_size > 1000
