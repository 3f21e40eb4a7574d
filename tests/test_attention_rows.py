"""Attention capture of chosen queries only (``generate_steps(capture_attention={si: [i, ...]})``): the rows are the
full capture's rows, generation is the same whichever capture is on, the memory is what ``complexity`` says, and the
app's inspector uses it to offer every scale of d36-s (512 px, L = 2,240 tokens)."""
import numpy as np
import pytest
import torch

pytest.importorskip("streamlit")
from app import loaders, position_inspector  # noqa: E402
from app.traces import GenSettings  # noqa: E402
from tests.test_app import assert_clean, new_app, scale_slider  # noqa: E402
from tests.test_family_d36 import KEY, d36_stand_in  # noqa: E402,F401 (fixture)
from varlite import complexity  # noqa: E402
from varlite.builtin import load_builtin  # noqa: E402
from varlite.core.configs import (OFFICIAL_PATCH_NUMS_512, VARConfig, VQVAEConfig, get_preset,  # noqa: E402
                                  official_vqvae)
from varlite.core.var import VAR  # noqa: E402
from varlite.core.vqvae import VQVAE  # noqa: E402
from varlite.synthetic import layout_of, synthetic_state_dict  # noqa: E402


def d36_s_stand_in() -> VAR:
    """d36-s's scales (L = 2,240) and shared AdaLN at depth 2, width 64, with synthetic weights in the official
    layout (the upstream rule, seed 0) beside a small tokenizer of the same scales."""
    vq_config = VQVAEConfig(vocab_size=64, z_channels=8, ch=32, ch_mult=(1, 1), num_res_blocks=1, using_sa=False,
                            using_mid_sa=False, patch_nums=OFFICIAL_PATCH_NUMS_512)
    var_config = VARConfig(vocab_size=64, z_channels=8, patch_nums=OFFICIAL_PATCH_NUMS_512, num_classes=10, depth=2,
                           embed_dim=64, num_heads=2, shared_aln=True)
    vqvae = VQVAE(vq_config)
    vqvae.load_state_dict(synthetic_state_dict(layout_of(vqvae), seed=0, patch_nums=OFFICIAL_PATCH_NUMS_512))
    var = VAR(var_config, vqvae)
    var.load_state_dict(synthetic_state_dict(layout_of(var), seed=0, patch_nums=OFFICIAL_PATCH_NUMS_512))
    return var.eval()


@pytest.fixture(scope="module")
def shapes() -> VAR:
    return load_builtin("shapes")[1]


@pytest.fixture(scope="module", params=["shapes", "d36-s stand-in"])
def var(request, shapes) -> VAR:
    return shapes if request.param == "shapes" else d36_s_stand_in()


def chosen_queries(var: VAR) -> dict[int, list[int]]:
    """Three scales, the last included, with a few queries each in no particular order (one twice)."""
    pn = var.patch_nums
    return {0: [0],
            len(pn) // 2: [pn[len(pn) // 2] ** 2 - 1, 1, 1],
            len(pn) - 1: [pn[-1] ** 2 - 1, 0, pn[-1] * (pn[-1] // 2) + 3]}


@pytest.fixture(scope="module")
def runs(var) -> dict[str, list]:
    """One generation of two labels (guided, top-k) with no capture, the full capture and ``chosen_queries``."""
    settings = dict(cfg=3.0, top_k=20, seed=7)
    return {name: list(var.generate_steps([1, 4], capture_attention=capture, **settings))
            for name, capture in (("none", False), ("full", True), ("queries", chosen_queries(var)))}


def test_query_rows_are_the_full_captures_rows(var, runs):
    queries = chosen_queries(var)
    for full_step, step in zip(runs["full"], runs["queries"]):
        if step.scale not in queries:
            assert step.attention is None
            continue
        q = len(queries[step.scale])
        assert len(step.attention) == var.config.depth
        for full_BHlLk, rows_BHqLk in zip(full_step.attention, step.attention):
            assert rows_BHqLk.shape == (2, var.config.num_heads, q, step.end)
            torch.testing.assert_close(rows_BHqLk, full_BHlLk[:, :, queries[step.scale]], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(rows_BHqLk.sum(-1), torch.ones(2, var.config.num_heads, q))


def test_generation_is_the_same_whichever_capture_is_on(var, runs):
    for name in ("full", "queries"):
        for plain, step in zip(runs["none"], runs[name]):
            assert torch.equal(step.tokens, plain.tokens)
            assert torch.equal(step.f_hat, plain.f_hat)
        if var.patch_nums[-1] <= 8:             # the shapes model: decode the images too (32 px)
            assert torch.equal(runs[name][-1].image(), runs["none"][-1].image())


def test_query_capture_memory_is_what_complexity_counts(var):
    queries = {si: [0, pn * pn - 1] for si, pn in enumerate(var.patch_nums)}
    steps = list(var.generate_steps([1, 2, 3], seed=0, capture_attention=queries))
    measured = [sum(w.numel() * w.element_size() for w in step.attention) for step in steps]
    assert measured == complexity.attention_capture_bytes(var.config, batch=3, queries=2)


def test_one_query_of_d36_s_costs_a_row_not_a_scale():
    """d36-s (36 layers x 36 heads, L = 2,240): all 1,024 queries of the last scale with guidance's two rows hold
    22 GB (2^30 bytes); the picked query's row 22 MB (2^20 bytes)."""
    config = get_preset("d36").var
    full, one_query = (complexity.attention_capture_bytes(config, batch=2, queries=q)[-1] for q in (None, 1))
    assert full == 36 * 36 * 1024 * 2240 * 4 * 2 and full / 2**30 == pytest.approx(22.15, abs=0.01)
    assert one_query == full // 1024 == 23_224_320


@pytest.mark.parametrize("capture, message", [
    ({10: [0]}, "scale 10 does not exist"),
    ({-1: [0]}, "scale -1 does not exist"),
    ({1: [4]}, r"scale 1 needs a non-empty list of query indices i = row \* 2 \+ col in 0..3; got \[4\]"),
    ({1: []}, "scale 1 needs a non-empty list"),
    ({1: 3}, "scale 1 needs a non-empty list"),
    ({1: [0.5]}, "scale 1 needs a non-empty list"),
    ("all", "capture_attention must be True, False or a mapping"),
])
def test_a_wrong_capture_request_says_what_is_allowed(shapes, capture, message):
    with pytest.raises(ValueError, match=message):
        next(shapes.generate_steps([0], seed=0, capture_attention=capture))


# ------------------------------------------------------------------------------------------ the app's inspector
def test_the_inspector_says_it_shows_one_querys_row_and_what_it_holds():
    """The real d36-s (built on the meta device: no weights) re-runs the generation for one query; the built-in
    shapes model keeps every scale's attention in its trace, so its inspector has nothing to add."""
    with torch.device("meta"):
        d36 = VAR(get_preset("d36").var, VQVAE(official_vqvae(OFFICIAL_PATCH_NUMS_512)))
    model = loaders.LoadedModel("official:d36", "d36-s", d36.vqvae, d36, "", "", ("",) * 1000)
    assert position_inspector.capture_note(model, 9) == (
        "This is the picked token's row of attention only: the generation was run again up to scale 10 keeping every "
        "layer's weights for this one query (22.1 MB with guidance's two rows; all 32x32 queries of the scale would "
        "hold 22.1 GB).")
    assert "(10.1 kB with guidance's two rows; all 1x1 queries of the scale would hold 10.1 kB)" in (
        position_inspector.capture_note(model, 0))
    assert position_inspector.capture_note(loaders.load_model("builtin:shapes"), 6) is None


def test_the_inspector_lists_the_full_captures_top_keys_at_d36_s_last_scale(d36_stand_in):  # noqa: F811
    """The d36-s stand-in (depth 2, width 64, 1,024 queries at scale 10): the keys the inspector lists for the picked
    token, from its one-query capture, are those of that token's row in a capture of the whole scale."""
    at = new_app(model_key=KEY)
    scale_slider(at).set_value(10).run()
    at.toggle(key="gen_show_att").set_value(True).run()
    assert_clean(at)
    model = loaders.load_model(KEY)
    assert [c.value for c in at.caption if c.value.startswith("This is the picked token's row")] == [
        position_inspector.capture_note(model, 9)]

    s = at.session_state["settings"]
    settings = GenSettings(KEY, s.label, s.seed, s.cfg, s.top_k, s.top_p, s.smooth)
    row, col = s.position(32)
    full = next(step for step in model.var.generate_steps([s.label], capture_attention=True, **settings.args())
                if step.scale == 9)
    last_layer_mean_over_heads_Lk = full.attention[-1][0, :, row * 32 + col].mean(0).numpy()   # the view's default
    want = position_inspector.top_keys(last_layer_mean_over_heads_Lk, model.patch_nums)
    shown = at.dataframe[-1].value
    assert shown[["scale", "position"]].to_dict("records") == want[["scale", "position"]].to_dict("records")
    np.testing.assert_allclose(shown["weight"], want["weight"], rtol=1e-5, atol=1e-7)
