"""The explorer's logic, driven headlessly: set widget values, check what they show."""
import numpy as np
import pytest

import eeutils
from eeutils.notebook import widgets


@pytest.fixture(scope="module")
def model():
    return eeutils.load_model("zoo/dense-small")


def test_explore_state(model):
    cache = {}
    s = widgets.explore(model, "And God said, Let there be light", layer=1, rule="max_prob", threshold=0.0,
                        cache=cache)
    L = model.n_layers
    assert len(s.tokens) == len(s.top_tokens) == len(s.exit_layers)
    assert (s.exit_layers == 1).all()  # threshold 0 fires at the first allowed layer
    assert s.saved == pytest.approx((L - 1) / L)
    s2 = widgets.explore(model, "And God said, Let there be light", layer=L, rule="max_prob", threshold=1.0,
                         cache=cache)
    assert len(cache) == 1  # the readout is reused when only the layer or rule changes
    assert s2.agreement == 1.0 and s2.saved <= s.saved
    assert (s2.top_tokens.top.str.count(" \\| ") == 4).all()  # k = 5 tokens per position
    assert s2.top_tokens.top1_prob.between(0, 1).all()
    with pytest.raises(ValueError, match="prompt"):
        widgets.explore(model, "  ", layer=1)
    with pytest.raises(ValueError, match="layer"):
        widgets.explore(model, "hello", layer=L + 1)


def test_explorer_widget_drives_outputs(model):
    pytest.importorskip("ipywidgets")
    ex = widgets.Explorer([model], prompt="In the beginning")
    assert ex.layer.max == model.n_layers
    ex.rule.value = "entropy"
    assert ex.threshold.max == widgets.RULES["entropy"][1]
    ex.threshold.value = 100.0 if ex.threshold.max >= 100 else ex.threshold.max
    assert ex.state is not None
    low_saved = ex.state.saved
    ex.threshold.value = ex.threshold.min
    assert ex.state.saved <= low_saved
    ex.layer.value = 0
    assert ex.state.layer == 0
    ex.prompt.value = ""
    assert "prompt" in ex.status.value


def test_explorer_inputs_update_on_commit_only(model):
    """Typing or dragging must not run the model per keystroke: inputs sync on Enter / release."""
    pytest.importorskip("ipywidgets")
    ex = widgets.Explorer([model], prompt="In the beginning")
    for ctl in (ex.prompt, ex.layer, ex.threshold):
        assert ctl.continuous_update is False, ctl.description
    def walk(wd):
        yield wd
        for child in getattr(wd, "children", ()):
            yield from walk(child)

    modules = {type(wd).__module__ for wd in walk(ex.widget)}
    assert all(m.startswith("ipywidgets.") for m in modules), modules  # core widgets only: Colab renders them


def test_static_fallback(model):
    state, ax = widgets.show_explorer([model], "In the beginning", interactive=False)
    assert ax.get_ylabel().startswith("layer") and np.all(state.exit_layers >= 1)


def test_token_labels_draw_without_glyph_warnings(tmp_path):
    """A token in a script the figure font lacks (CJK from a 262k vocabulary) is labelled by code point:
    drawing it warns about no missing glyph (a notebook would print that to stderr)."""
    import warnings

    import matplotlib.pyplot as plt

    from eeutils.notebook.plotting import token_label
    assert token_label("中") == "\\u4e2d" and token_label(" the") == "␣the" and token_label("\n") == "⏎"
    fig, ax = plt.subplots()
    ax.set_title(token_label(" 中文") + token_label("é"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig.savefig(tmp_path / "t.png")
    plt.close(fig)
