"""Token surgery and zero-shot editing: the official mask rule, kept tokens really kept, the rest really sampled by
the one generation loop, and specific errors for bad masks and tokens."""
import numpy as np
import pytest
import torch

from varlite import editing
from varlite.core.configs import OFFICIAL_PATCH_NUMS, VARConfig, VQVAEConfig, get_preset
from varlite.core.var import VAR
from varlite.core.vqvae import VQVAE


@pytest.fixture(scope="module")
def source(tiny_models):
    """Token maps of a generated pair of images (class 3 and 7): a varied source to edit."""
    _, var = tiny_models
    return editing.step_tokens(list(var.generate_steps([3, 7], cfg=1.5, seed=1)))


def bilinear_sample(mask_HW: np.ndarray, pn: int) -> np.ndarray:
    """Resize by hand: output cell i samples the input at (i + 0.5) H / pn - 0.5 (align_corners=False), clamped at
    the border, with bilinear weights."""
    H = mask_HW.shape[0]
    src = np.clip((np.arange(pn) + 0.5) * H / pn - 0.5, 0, H - 1)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, H - 1)
    w1 = src - i0
    rows = mask_HW[i0] * (1 - w1)[:, None] + mask_HW[i1] * w1[:, None]
    return rows[:, i0] * (1 - w1)[None, :] + rows[:, i1] * w1[None, :]


# ------------------------------------------------------------------------------------------ the mask rule
def test_scale_masks_follow_the_official_rule_on_the_official_schedule():
    soft_BHW = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(0))
    keeps = editing.scale_keep_masks(soft_BHW, OFFICIAL_PATCH_NUMS)
    for pn, keep_Bhw in zip(OFFICIAL_PATCH_NUMS, keeps):
        assert keep_Bhw.shape == (2, pn, pn) and keep_Bhw.dtype == torch.bool
        for b in range(2):
            expected = np.ones((pn, pn), bool) if pn * pn <= 3 else bilinear_sample(soft_BHW[b].double().numpy(), pn) > 0.5
            np.testing.assert_array_equal(keep_Bhw[b].numpy(), expected)


def test_the_demo_hole_keeps_the_first_scale_and_nothing_at_the_second():
    """The official demo's box (0.1..0.8) as a hole on d16's 16x16 grid: rows/columns 2..12 are generated."""
    hole_HW = editing.box_mask(16, 0.1, 0.1, 0.8, 0.8)
    assert hole_HW.sum() == 11 * 11 and hole_HW[2, 2] and hole_HW[12, 12] and not hole_HW[1, 2] and not hole_HW[13, 12]
    keeps = editing.scale_keep_masks(~hole_HW, OFFICIAL_PATCH_NUMS)
    assert bool(keeps[0].all())                         # 1 token <= 3: always kept
    assert not bool(keeps[1].any())                     # the 2x2 scale samples 4 points inside the hole
    assert torch.equal(keeps[-1][0], ~hole_HW)          # the last scale is the mask itself


def test_box_mask_rejects_bad_coordinates():
    with pytest.raises(ValueError, match="fraction of the grid in \\[0, 1\\]"):
        editing.box_mask(16, 0.1, 0.1, 1.2, 0.8)
    with pytest.raises(ValueError, match="y0 < y1"):
        editing.box_mask(16, 0.5, 0.1, 0.5, 0.8)


# ------------------------------------------------------------------------------------------ editing
def test_kept_tokens_are_forced_at_every_scale_and_the_rest_is_sampled(tiny_models, source):
    _, var = tiny_models
    hole_HW = editing.box_mask(4, 0.25, 0.0, 1.0, 0.75)
    result = editing.inpaint(var, source, hole_HW, seed=2, more_smooth=True)
    keeps = editing.scale_keep_masks(~hole_HW, var.patch_nums)
    codebook = var.vqvae.quantize.embedding.weight
    generated_differs = False
    for si, (step, src, keep_1hw) in enumerate(zip(result.steps, source, keeps)):
        assert torch.equal(result.keep[si], keep_1hw)
        keep_Bhw = keep_1hw.expand_as(src)
        assert torch.equal(step.tokens[keep_Bhw], src[keep_Bhw])
        # with Gumbel smoothing the sampled vectors are mixtures; kept ones are the exact codebook vectors
        kept_vectors = step.embedding.permute(0, 2, 3, 1)[keep_Bhw]
        torch.testing.assert_close(kept_vectors, codebook[src[keep_Bhw]])
        generated_differs |= bool((step.tokens[~keep_Bhw] != src[~keep_Bhw]).any())
    assert generated_differs
    assert torch.equal(result.labels, torch.full((2,), var.num_classes))   # in-painting is unconditional by default
    assert result.image().shape == result.source_image().shape == (2, 3, 64, 64)


def test_keeping_everything_reproduces_the_source(tiny_models, source):
    _, var = tiny_models
    result = editing.edit(var, source, torch.ones(4, 4), labels=5, seed=9)
    assert all(torch.equal(a, b) for a, b in zip(result.tokens, source))
    torch.testing.assert_close(result.image(), result.source_image(), atol=1e-4, rtol=0)   # f_hat summed in another order
    with torch.no_grad():
        decoded = var.vqvae.idx_to_img([t.flatten(1) for t in source]).add(1).mul(0.5)
    torch.testing.assert_close(result.source_image(), decoded)


def test_keeping_nothing_still_keeps_the_one_token_scale(tiny_models, source):
    _, var = tiny_models
    result = editing.edit(var, source, torch.zeros(2, 4, 4), labels=[3, 7], seed=4)
    assert torch.equal(result.tokens[0], source[0])
    assert [bool(k.any()) for k in result.keep] == [True, False, False, False]
    same = editing.regenerate_from(var, source, 1, [3, 7], seed=4)
    assert all(torch.equal(a, b) for a, b in zip(result.tokens, same.tokens))


def test_regenerate_from_keeps_earlier_scales_and_does_not_disturb_sampling(tiny_models):
    _, var = tiny_models
    original = editing.step_tokens(list(var.generate_steps([6], cfg=1.5, seed=7)))
    for from_scale in range(len(var.patch_nums) + 1):
        same_seed = editing.regenerate_from(var, original, from_scale, 6, seed=7)
        assert all(torch.equal(a, b) for a, b in zip(same_seed.tokens, original))   # forcing a token draws the same
        other_seed = editing.regenerate_from(var, original, from_scale, 6, seed=8)
        assert all(torch.equal(a, b) for a, b in zip(other_seed.tokens[:from_scale], original[:from_scale]))
        assert [bool(k.all()) for k in other_seed.keep] == [si < from_scale for si in range(4)]
        if from_scale < len(var.patch_nums):
            assert any(not torch.equal(a, b) for a, b in zip(other_seed.tokens[from_scale:], original[from_scale:]))
    plain = editing.step_tokens(list(var.generate_steps([6], cfg=1.5, seed=8)))
    restarted = editing.regenerate_from(var, original, 0, 6, seed=8)
    assert all(torch.equal(a, b) for a, b in zip(restarted.tokens, plain))


def test_a_changed_coarse_token_changes_what_is_generated_after_it(tiny_models, source):
    _, var = tiny_models
    surgery = [t[:1].clone() for t in source]
    surgery[1][0, 0, 0] = (surgery[1][0, 0, 0] + 1) % var.config.vocab_size
    before = editing.regenerate_from(var, [t[:1] for t in source], 2, 3, seed=5)
    after = editing.regenerate_from(var, surgery, 2, 3, seed=5)
    assert torch.equal(after.tokens[1], surgery[1])
    assert not torch.equal(before.steps[2].logits, after.steps[2].logits)


def test_editing_an_image_uses_its_tokens_and_reconstruction(tiny_models):
    vqvae, var = tiny_models
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    known_HW = editing.box_mask(4, 0.25, 0.25, 0.75, 0.75)
    result = editing.outpaint(var, image, known_HW, seed=3)
    image_tokens = editing.image_tokens(vqvae, image)
    assert all(torch.equal(a, b) for a, b in zip(result.source_tokens, image_tokens))
    assert torch.equal(result.tokens[-1][0][known_HW], image_tokens[-1][0][known_HW])
    with torch.no_grad():
        torch.testing.assert_close(result.source_image(), vqvae.reconstruct(image).add(1).mul(0.5))
    changed = editing.edit_class(var, image, ~known_HW, 2, seed=3)
    assert torch.equal(changed.labels, torch.tensor([2]))
    assert all(torch.equal(a, b) for a, b in zip(changed.keep, result.keep))   # same region kept as by outpaint


def test_hand_made_surgery_broadcasts_one_map_to_a_batch(tiny_models):
    _, var = tiny_models
    tokens = {2: torch.arange(9).view(3, 3)}
    keep = {2: torch.tensor([[True, False, False], [False, True, False], [False, False, True]])}
    result = editing.generate_with_overrides(var, [1, 2], editing.make_overrides(var, tokens, keep), seed=0)
    assert torch.equal(result.tokens[2][:, keep[2]], torch.tensor([[0, 4, 8], [0, 4, 8]]))
    assert result.source_tokens[0] is None
    with pytest.raises(ValueError, match="no complete source image"):
        result.source_image()


def test_painting_a_box_of_one_scale_keeps_the_coarser_scales_and_regenerates_the_finer(tiny_models, source):
    _, var = tiny_models
    box = (0.0, 0.0, 2 / 3, 1 / 3)                         # on the 3x3 scale: rows 0..1 of column 0
    result = editing.paint_tokens(var, source, 2, box, 63, [3, 7], seed=2)
    painted = source[2].clone()
    painted[:, :2, 0] = 63
    assert all(torch.equal(result.tokens[si], source[si]) for si in (0, 1))
    assert torch.equal(result.tokens[2], painted)
    assert [bool(k.all()) for k in result.keep] == [True, True, True, False]
    with torch.inference_mode():
        source_f_hat = var.vqvae.quantize.idx_to_f_hats([t.flatten(1) for t in source])[-1]
    torch.testing.assert_close(result.source_image(), var.vqvae.decode_f_hat(source_f_hat))
    with pytest.raises(ValueError, match="scale 4 does not exist"):
        editing.paint_tokens(var, source, 4, box, 1, [3, 7])
    with pytest.raises(ValueError, match=r"tokens of scale 2 must be codebook indices in \[0, 63\]"):
        editing.paint_tokens(var, source, 2, box, 64, [3, 7])


def test_editing_works_for_another_schedule_and_batched_masks():
    preset = get_preset("tiny")
    vq_cfg = VQVAEConfig(**{**preset.vqvae.__dict__, "patch_nums": (1, 2, 4)})
    var_cfg = VARConfig(**{**preset.var.__dict__, "patch_nums": (1, 2, 4)})
    torch.manual_seed(1)
    var = VAR(var_cfg, VQVAE(vq_cfg)).eval()
    torch.nn.init.normal_(var.pos_1LC, std=0.2)   # random init leaves positions equal; make them differ
    source = editing.step_tokens(list(var.generate_steps([0, 1], seed=0)))
    keep_BHW = torch.stack([torch.ones(4, 4), editing.box_mask(4, 0, 0, 0.5, 1.0).float()])
    result = editing.edit(var, source, keep_BHW, labels=[0, 1], seed=1)
    assert torch.equal(result.tokens[-1][0], source[-1][0])
    assert torch.equal(result.tokens[-1][1, :2], source[-1][1, :2])
    assert [k.shape for k in result.keep] == [(2, 1, 1), (2, 2, 2), (2, 4, 4)]


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("mask, message", [
    (torch.ones(64, 64), "must have shape \\(4, 4\\) or \\(B, 4, 4\\)"),
    (torch.ones(4, 5), "must have shape \\(4, 4\\)"),
    (torch.ones(1, 1, 4, 4), "must have shape \\(4, 4\\)"),
    (torch.full((4, 4), 2.0), "values must be in \\[0, 1\\]"),
])
def test_bad_masks_get_specific_errors(tiny_models, source, mask, message):
    _, var = tiny_models
    with pytest.raises(ValueError, match=message):
        editing.edit(var, source, mask, labels=3)


@pytest.mark.parametrize("tokens, keep, error, message", [
    ({1: torch.full((2, 2), 64)}, True, ValueError, "codebook indices in \\[0, 63\\]"),
    ({1: torch.full((2, 2), -1)}, True, ValueError, "codebook indices in \\[0, 63\\]"),
    ({1: torch.zeros(2, 2)}, True, TypeError, "integer codebook indices"),
    ({1: torch.zeros(3, 3, dtype=torch.long)}, True, ValueError, "must have shape \\(2, 2\\), \\(B, 2, 2\\) or \\(B, 4\\)"),
    ({4: torch.zeros(4, 4, dtype=torch.long)}, True, ValueError, "scale 4 does not exist: this model has K=4 scales"),
    ({1: torch.zeros(2, 2, dtype=torch.long)}, {2: True}, ValueError, "must name the same scales"),
    ({1: torch.zeros(2, 2, dtype=torch.long)}, {1: torch.full((2, 2), 0.7)}, ValueError, "boolean \\(or exactly 0/1\\)"),
    ({1: torch.zeros(2, 2, 2, dtype=torch.long)}, {1: torch.ones(3, 2, 2, dtype=torch.bool)}, ValueError,
     "tokens have batch 2 but the keep mask has batch 3"),
])
def test_bad_overrides_get_specific_errors(tiny_models, tokens, keep, error, message):
    _, var = tiny_models
    with pytest.raises(error, match=message):
        editing.make_overrides(var, tokens, keep)


def test_other_bad_edit_arguments_get_specific_errors(tiny_models, source):
    _, var = tiny_models
    hole = editing.box_mask(4, 0.25, 0.25, 0.75, 0.75)
    with pytest.raises(ValueError, match="expected an image batch of shape \\(B, 3, 64, 64\\)"):
        editing.inpaint(var, torch.zeros(1, 3, 32, 32), hole)
    with pytest.raises(ValueError, match="list of K=4 token maps"):
        editing.inpaint(var, source[:3], hole)
    with pytest.raises(ValueError, match="from_scale must be an int in \\[0, 4\\]"):
        editing.regenerate_from(var, source, 5, 3)
    with pytest.raises(ValueError, match="needs real classes in 0..9"):
        editing.edit_class(var, source, hole, 10)
    with pytest.raises(ValueError, match="token maps / masks have batch \\[2\\] but there are 3 labels"):
        editing.inpaint(var, source, hole, labels=[1, 2, 3])
    with pytest.raises(ValueError, match="label 11 is out of range"):
        editing.inpaint(var, source, hole, labels=11)
    with pytest.raises(ValueError, match="1-D sequence of ints"):
        editing.inpaint(var, source, hole, labels=1.5)


def test_replacing_chosen_cells_keeps_the_rest_of_the_scale(tiny_models, source):
    _, var = tiny_models
    where_hw = torch.tensor([[True, False, False], [False, False, False], [False, False, True]])
    result = editing.replace_tokens(var, source, 2, where_hw, 5, [3, 7], seed=2)
    painted = source[2].clone()
    painted[:, 0, 0] = painted[:, 2, 2] = 5
    assert torch.equal(result.tokens[2], painted)
    assert all(torch.equal(result.tokens[si], source[si]) for si in (0, 1))
    assert [bool(k.all()) for k in result.keep] == [True, True, True, False]
    box = editing.paint_tokens(var, source, 2, (0.0, 0.0, 1 / 3, 1 / 3), 5, [3, 7], seed=2)
    one_cell = editing.replace_tokens(var, source, 2, editing.box_mask(3, 0.0, 0.0, 1 / 3, 1 / 3), 5, [3, 7], seed=2)
    assert all(torch.equal(a, b) for a, b in zip(box.tokens, one_cell.tokens))    # a box is a set of cells
    with pytest.raises(ValueError, match=r"keep mask of scale 2 must be True/False or have shape \(3, 3\)"):
        editing.replace_tokens(var, source, 2, torch.ones(4, 4, dtype=torch.bool), 5, [3, 7])


def test_predict_scale_gives_the_models_candidates_given_the_coarser_scales(tiny_models):
    _, var = tiny_models
    steps = list(var.generate_steps([6], cfg=1.5, seed=7))
    original = editing.step_tokens(steps)
    step = editing.predict_scale(var, original, 2, 6, cfg=1.5, seed=7)
    assert step.scale == 2 and torch.equal(step.tokens, original[2])        # same label, settings, seed: the source
    torch.testing.assert_close(step.probs, steps[2].probs)
    tokens_hwk, probs_hwk = step.candidates(3)
    assert tokens_hwk.shape == (1, 3, 3, 3) and bool((probs_hwk[..., 0] >= probs_hwk[..., 1]).all())
    changed = [t.clone() for t in original]
    changed[1][0, 0, 0] = (changed[1][0, 0, 0] + 1) % var.config.vocab_size
    assert not torch.allclose(editing.predict_scale(var, changed, 2, 6, cfg=1.5, seed=7).probs, steps[2].probs)
    with pytest.raises(ValueError, match="scale 4 does not exist"):
        editing.predict_scale(var, original, 4, 6)
