"""Figures (varlite.viz and varlite.concept_figures): each builder returns a Figure with the panels and labels it
promises, shows the data it claims to show, and leaves no pyplot figure open."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (only to check that nothing is left open)
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from varlite import complexity, concept_figures, viz  # noqa: E402
from varlite.core.configs import OFFICIAL_PATCH_NUMS, get_preset  # noqa: E402


@pytest.fixture(scope="module")
def steps(tiny_models):
    _, var = tiny_models
    return list(var.generate_steps([3, 7], seed=0, capture_attention=True))


@pytest.fixture(autouse=True)
def no_open_pyplot_figures():
    plt.close("all")
    yield
    assert plt.get_fignums() == []


def panels(fig: Figure) -> list:
    """The plotting axes of a figure (colorbars excluded)."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def test_codebook_colors_are_a_fixed_projection_of_the_codebook(tiny_models):
    vqvae, _ = tiny_models
    codebook = vqvae.quantize.embedding.weight
    colors = viz.codebook_colors(codebook)
    assert colors.shape == (64, 3) and colors.min() == 0 and colors.max() == 1
    np.testing.assert_array_equal(colors, viz.codebook_colors(codebook.clone()))
    np.testing.assert_allclose(colors, viz.codebook_colors(-codebook), atol=1e-12)   # the sign convention is fixed
    np.testing.assert_allclose(colors, viz.codebook_colors(codebook + 3.0), atol=1e-6)   # only the shape matters


def test_token_map_figure(tiny_models, steps):
    vqvae, _ = tiny_models
    fig = viz.token_map_figure(steps, vqvae.quantize.embedding.weight, b=1)
    axes = panels(fig)
    assert len(axes) == 4 and [ax.get_title() for ax in axes] == ["scale 1: 1x1", "scale 2: 2x2", "scale 3: 3x3", "scale 4: 4x4"]
    assert all(ax.get_xlabel() == "column" and ax.get_ylabel() == "row" for ax in axes)
    last = axes[-1]
    assert [int(t.get_text()) for t in last.texts] == steps[-1].tokens[1].flatten().tolist()
    colors = viz.codebook_colors(vqvae.quantize.embedding.weight)
    np.testing.assert_allclose(last.images[0].get_array(), colors[steps[-1].tokens[1].numpy()])


def test_token_map_figure_accepts_plain_maps(tiny_models):
    vqvae, _ = tiny_models
    fig = viz.token_map_figure([torch.zeros(1, 1, dtype=torch.long), torch.arange(100).view(10, 10) % 64],
                               vqvae.quantize.embedding.weight)
    assert len(panels(fig)) == 2 and len(panels(fig)[1].texts) == 0   # no indices on a 10x10 map


@pytest.mark.parametrize("reduce", ["norm", "pca"])
def test_latent_figure(steps, reduce):
    fig = viz.latent_figure(steps, reduce=reduce)
    axes = panels(fig)
    assert len(axes) == 8 and len(fig.axes) == 10   # 2 fields x 4 scales, one colorbar per field
    assert axes[0].get_title() == "contribution, scale 1" and axes[7].get_title() == "f_hat, scale 4"
    if reduce == "norm":
        np.testing.assert_allclose(axes[7].images[0].get_array(), steps[3].f_hat[0].norm(dim=0).numpy(), rtol=1e-5)
    with pytest.raises(ValueError, match="reduce must be 'norm' or 'pca'"):
        viz.latent_figure(steps, reduce="mean")


def test_latent_figure_of_an_encoding(tiny_models):
    vqvae, _ = tiny_models
    encoding = list(vqvae.encode_steps(torch.zeros(1, 3, 64, 64)))
    fig = viz.latent_figure(encoding, fields=("target", "rest"))
    assert len(panels(fig)) == 8 and panels(fig)[0].images[0].get_array().shape == (1, 1)


def test_pyramid_figure(steps):
    target = torch.rand(2, 3, 64, 64)
    fig = viz.pyramid_figure(steps, b=1, input_image=target)
    axes = panels(fig)
    assert len(axes) == 5 and axes[-1].get_title() == "input" and axes[0].get_title() == "after scale 1 (1x1)"
    np.testing.assert_allclose(axes[3].images[0].get_array(), steps[3].image()[1].permute(1, 2, 0).numpy())
    assert all(ax.get_xlabel() == "x (pixels)" for ax in axes)


def test_attention_mask_figure_shows_the_block_causal_mask():
    fig = viz.attention_mask_figure(OFFICIAL_PATCH_NUMS, current_scale=7)
    (ax,) = panels(fig)
    scale_L = np.repeat(np.arange(10), [pn * pn for pn in OFFICIAL_PATCH_NUMS])
    expected_LL = (scale_L[None, :] <= scale_L[:, None]).astype(float)   # key scale <= query scale
    np.testing.assert_array_equal(ax.images[0].get_array(), expected_LL)
    assert ax.images[0].get_array().shape == (680, 680)
    (box,) = ax.patches
    assert (box.get_x(), box.get_y(), box.get_width(), box.get_height()) == (-0.5, 155 - 0.5, 255, 100)
    assert ax.get_xlabel().startswith("key token") and ax.get_ylabel().startswith("query token")
    assert len(ax.lines) == 2 * 9   # scale boundaries, horizontal and vertical


def test_attention_figure_shows_one_rows_weights_per_scale(steps, tiny_models):
    _, var = tiny_models
    step = steps[3]
    fig = viz.attention_figure(step, var.patch_nums, layer=1, head=0, row=2, col=1, b=1)
    axes = panels(fig)
    assert len(axes) == 4
    weights = step.attention[1][1, 0, 2 * 4 + 1].numpy()
    grids = [ax.images[0].get_array() for ax in axes]
    np.testing.assert_allclose(np.concatenate([g.ravel() for g in grids]), weights, rtol=1e-6)
    assert sum(float(ax.get_title().split(": ")[1].split(" ")[0]) for ax in axes) == pytest.approx(1, abs=0.02)
    (query_box,) = axes[-1].patches
    assert (query_box.get_x(), query_box.get_y()) == (0.5, 1.5)
    mean_fig = viz.attention_figure(step, var.patch_nums, layer=0, head=None, row=0, col=0)
    np.testing.assert_allclose(panels(mean_fig)[0].images[0].get_array().ravel(),
                               step.attention[0][0, :, 0, :1].mean(0).numpy(), rtol=1e-6)


def test_attention_figure_errors(steps, tiny_models):
    _, var = tiny_models
    with pytest.raises(ValueError, match="layer must be in \\[0, 1\\]"):
        viz.attention_figure(steps[2], var.patch_nums, layer=2, head=0, row=0, col=0)
    with pytest.raises(ValueError, match="head must be in \\[0, 1\\]"):
        viz.attention_figure(steps[2], var.patch_nums, layer=0, head=2, row=0, col=0)
    with pytest.raises(ValueError, match="outside scale 3's 3x3 map"):
        viz.attention_figure(steps[2], var.patch_nums, layer=0, head=0, row=3, col=0)
    with pytest.raises(ValueError, match="do not match this step"):
        viz.attention_figure(steps[2], (1, 2, 4, 8), layer=0, head=0, row=0, col=0)
    plain = next(var.generate_steps([1], seed=0))
    with pytest.raises(ValueError, match="capture_attention=True"):
        viz.attention_figure(plain, var.patch_nums, layer=0, head=0, row=0, col=0)
    p_ax, _ = panels(viz.probability_figure(plain))   # probabilities need no capture: they come from the logits
    np.testing.assert_allclose(p_ax.images[0].get_array(), plain.token_prob[0].numpy())


def test_probability_and_topk_figures(steps):
    step = steps[2]
    fig = viz.probability_figure(step, b=1)
    p_ax, h_ax = panels(fig)
    np.testing.assert_allclose(p_ax.images[0].get_array(), step.token_prob[1].numpy())
    np.testing.assert_allclose(h_ax.images[0].get_array(), step.entropy[1].numpy())
    assert h_ax.images[0].get_clim() == pytest.approx((0, np.log(64)))
    fig = viz.topk_figure(step, 1, 2, b=1)
    (ax,) = panels(fig)
    topk_tokens, topk_probs = step.candidates(5)
    heights = [bar.get_height() for bar in ax.patches]
    np.testing.assert_allclose(heights, topk_probs[1, 1, 2].numpy())
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(int(t)) for t in topk_tokens[1, 1, 2]]
    assert ax.get_xlabel().startswith("token index") and ax.get_ylabel() == "probability"
    chosen = int(step.tokens[1, 1, 2])
    orange = [t for t, bar in zip(topk_tokens[1, 1, 2].tolist(), ax.patches)
              if matplotlib.colors.to_hex(bar.get_facecolor()) == viz.OKABE_ITO["orange"].lower()]
    assert orange == ([chosen] if chosen in topk_tokens[1, 1, 2].tolist() else [])
    assert len(panels(viz.topk_figure(step, 1, 2, b=1, k=8))[0].patches) == 8


def test_complexity_figure():
    rows = complexity.scaling_rows([1, 2, 4, 8, 16], get_preset("d16").var)
    fig = viz.complexity_figure(rows)
    steps_ax, flops_ax = panels(fig)
    assert steps_ax.get_yscale() == "log" and flops_ax.get_yscale() == "log"
    assert len(steps_ax.lines) == 2 and len(flops_ax.lines) == 4
    np.testing.assert_array_equal(steps_ax.lines[1].get_ydata(), [1, 4, 16, 64, 256])
    assert flops_ax.get_xlabel() == "final token-grid side n" and flops_ax.get_legend() is not None


# ------------------------------------------------------------------------------------------ concept figures
def box_texts(fig: Figure) -> dict:
    """{gid: text} of the boxes of a box diagram, and the arrows' gids ("from->to")."""
    ax = panels(fig)[0]
    boxes = {t.get_gid(): t.get_text() for t in ax.texts if t.get_gid() and "->" not in t.get_gid()}
    arrows = {t.get_gid() for t in ax.texts if t.get_gid() and "->" in t.get_gid()}
    return boxes, arrows


def test_quantization_concept_figure_colours_the_plane_by_nearest_code():
    vectors = torch.tensor([[0.0, 0.0], [2.0, 2.1], [-1.0, 0.2]])
    codebook = torch.tensor([[0.1, 0.0], [2.0, 2.0], [-3.0, -3.0]])
    fig = concept_figures.quantization_concept_figure(vectors, codebook)
    ax = panels(fig)[0]
    regions = ax.images[0].get_array()
    assert regions.shape == (200, 200) and set(np.unique(regions)) <= {0, 1, 2}
    assert regions[0, 0] == 2 and regions[-1, -1] == 1                  # corners: nearest to codes 2 and 1
    segments = [line for line in ax.lines if line.get_gid() == "assignment"]
    np.testing.assert_allclose([np.asarray(s.get_xydata())[1] for s in segments], [[0.1, 0.0], [2.0, 2.0], [0.1, 0.0]],
                               rtol=1e-6)
    with pytest.raises(ValueError, match="2-D, to draw"):
        concept_figures.quantization_concept_figure(torch.zeros(3, 4), codebook)


def test_pyramid_concept_figure_draws_each_token_map_and_the_area_it_covers():
    fig = concept_figures.pyramid_concept_figure((1, 2, 4))
    axes = panels(fig)
    assert len(axes) == 6 and [ax.get_title() for ax in axes[:3]] == ["r_1: 1x1", "r_2: 2x2", "r_3: 4x4"]
    assert [ax.images[0].get_array().shape for ax in axes] == [(1, 1), (2, 2), (4, 4), (4, 4), (4, 4), (4, 4)]
    np.testing.assert_array_equal(axes[1].images[0].get_array(), [[0, 1], [1, 0]])
    np.testing.assert_array_equal(axes[4].images[0].get_array(), np.kron([[0, 1], [1, 0]], np.ones((2, 2))))
    assert "L = 21 tokens" in fig._suptitle.get_text()


def test_generation_order_figure_raster_steps_and_scale_steps():
    fig = concept_figures.generation_order_figure((1, 2, 3))
    axes = panels(fig)
    assert len(axes) == 4
    np.testing.assert_array_equal(axes[0].images[0].get_array(), np.arange(1, 10).reshape(3, 3))
    for k, ax in enumerate(axes[1:], 1):
        assert ax.get_title() == f"step {k}: {[1, 4, 9][k - 1]}"
        assert (ax.images[0].get_array() == k).all()
    assert "9 sequential steps vs 3" in fig._suptitle.get_text()


def test_adaln_block_figure_wires_the_six_modulations():
    boxes, arrows = box_texts(concept_figures.adaln_block_figure())
    assert "exp(s_h)" in boxes["attn"] and "6C" in boxes["ada"]
    assert {"six->mod1", "six->gate1", "six->ln2", "six->gate2", "class->ada", "x->ln1"} <= arrows


def test_cfg_ramp_figure_plots_the_samplers_guidance_scale():
    from varlite.core.sampling import cfg_strength
    fig = concept_figures.cfg_ramp_figure(10, cfgs=(1.5, 4.0))
    ax = panels(fig)[0]
    ramp = ax.lines[0].get_ydata()
    np.testing.assert_allclose(ramp, [1 + cfg_strength(1.5, si, 10) for si in range(10)])
    assert ramp[0] == 1.0 and ramp[-1] == pytest.approx(2.5)                  # cfg 1.5 = guidance 2.5 at the last scale
    assert list(ax.lines[2].get_ydata()) == [1.5, 1.5] and ax.get_xlabel() == "scale k"


def test_training_stages_and_pipeline_and_capstone_diagrams():
    boxes, arrows = box_texts(concept_figures.training_stages_figure())
    assert "vq loss" in boxes["loss1"] and "OWN samples" in boxes["own"] and {"own->var", "tokens->input"} <= arrows
    d16 = get_preset("d16")
    boxes, _ = box_texts(concept_figures.official_pipeline_figure(d16.vqvae, d16.var))
    assert "L = 680 tokens" in boxes["tok"] and "C = 1024, 16 heads" in boxes["var"] and "16x16x32" in boxes["f"]
    boxes, arrows = box_texts(concept_figures.capstone_map_figure())
    assert sorted(boxes) == sorted(concept_figures.CAPSTONE_PIECES) and boxes["generate"] == "12. generate"
    assert len(arrows) == 12


def test_exposure_bias_figure_blanks_scales_that_do_not_depend_on_the_sampled_one():
    rise = torch.arange(12, dtype=torch.float32).view(3, 4) / 10
    fig = concept_figures.exposure_bias_figure(rise, torch.tensor([0.5, 0.25, 1.0]))
    ax = panels(fig)[0]
    shown = np.asarray(ax.images[0].get_array().filled(np.nan), dtype=float)
    assert shown.shape == (3, 4)
    assert np.isnan(shown[0, 0]) and np.isnan(shown[2, 2]) and shown[0, 1] == pytest.approx(0.1)
    assert shown[2, 3] == pytest.approx(1.1)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["1 (50% same)", "2 (25% same)", "3 (100% same)"]


def test_keep_masks_figure_shows_the_editing_masks():
    from varlite import editing
    keeps = editing.scale_keep_masks(editing.box_mask(4, 0.0, 0.0, 0.5, 0.5), (1, 2, 4))
    fig = concept_figures.keep_masks_figure(keeps)
    axes = panels(fig)
    for ax, keep in zip(axes, keeps):
        np.testing.assert_array_equal(ax.images[0].get_array(), keep[0].float().numpy())
    assert axes[2].get_title() == "scale 3: 4/16 kept"


def test_scale_cost_figure_counts_tokens_and_cached_pairs():
    fig = concept_figures.scale_cost_figure((1, 2, 3))
    tokens_ax, pairs_ax = panels(fig)
    assert [p.get_height() for p in tokens_ax.patches] == [1, 4, 9]
    assert [p.get_height() for p in pairs_ax.patches] == [1 * 1, 4 * 5, 9 * 14]
    assert tokens_ax.get_title().endswith("last scale 64%")


def test_independence_figure_compares_joint_and_product_of_marginals():
    fig = concept_figures.independence_figure([[0.5, 0.0], [0.0, 0.5]])
    joint_ax, product_ax = panels(fig)
    np.testing.assert_allclose(product_ax.images[0].get_array(), np.full((2, 2), 0.25))
    assert joint_ax.get_title().endswith("P(a != b) = 0.00") and product_ax.get_title().endswith("P(a != b) = 0.50")
    with pytest.raises(ValueError, match="joint distribution"):
        concept_figures.independence_figure([[0.5, 0.5], [0.5, 0.5]])
