"""Per-row settings of ``generate_steps``: several requests run as one batch, and row b gets what the request alone
gets (its own cfg, top-k, top-p and generator)."""
import pytest
import torch

from varlite.core import sampling

# five requests: different classes, seeds, guidance and filters (one greedy row, one with both filters off)
REQUESTS = [dict(label=1, cfg=1.5, top_k=0, top_p=0.0, seed=0),
            dict(label=3, cfg=4.0, top_k=10, top_p=0.95, seed=1),
            dict(label=5, cfg=0.0, top_k=1, top_p=0.0, seed=2),
            dict(label=7, cfg=2.2, top_k=64, top_p=0.5, seed=3),
            dict(label=9, cfg=1.5, top_k=30, top_p=0.96, seed=4)]


def batched(requests, key):
    return [r[key] for r in requests]


def solo_steps(var, request, **extra):
    return list(var.generate_steps([request["label"]], cfg=request["cfg"], top_k=request["top_k"],
                                   top_p=request["top_p"], seed=request["seed"], **extra))


def batch_steps(var, requests, **extra):
    return list(var.generate_steps(batched(requests, "label"), cfg=batched(requests, "cfg"),
                                   top_k=batched(requests, "top_k"), top_p=batched(requests, "top_p"),
                                   seed=batched(requests, "seed"), **extra))


def assert_row_is_the_solo_run(batch, b, solo):
    for batch_step, solo_step in zip(batch, solo, strict=True):
        assert torch.equal(batch_step.tokens[b], solo_step.tokens[0]), f"row {b}, scale {solo_step.scale}"
        torch.testing.assert_close(batch_step.logits[b], solo_step.logits[0], rtol=0, atol=1e-3)
        torch.testing.assert_close(batch_step.f_hat[b], solo_step.f_hat[0], rtol=0, atol=1e-3)


@pytest.mark.parametrize("more_smooth", [False, True])
def test_each_row_of_a_batch_gets_the_tokens_of_its_solo_run(tiny_models, more_smooth):
    _, var = tiny_models
    batch = batch_steps(var, REQUESTS, more_smooth=more_smooth)
    for b, request in enumerate(REQUESTS):
        assert_row_is_the_solo_run(batch, b, solo_steps(var, request, more_smooth=more_smooth))
    torch.testing.assert_close(batch[-1].image()[2], solo_steps(var, REQUESTS[2])[-1].image()[0], rtol=0, atol=1e-3)


def test_each_row_with_its_own_overrides_gets_its_solo_run(tiny_models):
    """Token surgery per row: row b keeps its own scale-2 map where its mask says so, like the request alone."""
    _, var = tiny_models
    pn = var.patch_nums[1]
    tokens_Bhw = torch.arange(len(REQUESTS) * pn * pn).view(-1, pn, pn) % var.config.vocab_size
    keep_Bhw = torch.rand(tokens_Bhw.shape, generator=torch.Generator().manual_seed(0)) < 0.5
    batch = batch_steps(var, REQUESTS, overrides={1: (tokens_Bhw, keep_Bhw)})
    for b, request in enumerate(REQUESTS):
        assert_row_is_the_solo_run(batch, b, solo_steps(var, request, overrides={1: (tokens_Bhw[b], keep_Bhw[b])}))
        assert torch.equal(batch[1].tokens[b][keep_Bhw[b]], tokens_Bhw[b][keep_Bhw[b]])


def test_a_repeated_request_gives_both_rows_the_same_tokens(tiny_models):
    _, var = tiny_models
    requests = [REQUESTS[1], REQUESTS[3], REQUESTS[1]]
    batch = batch_steps(var, requests)
    assert all(torch.equal(step.tokens[0], step.tokens[2]) for step in batch)
    assert not all(torch.equal(step.tokens[0], step.tokens[1]) for step in batch)
    assert_row_is_the_solo_run(batch, 2, solo_steps(var, REQUESTS[1]))


def test_a_list_of_generators_is_a_list_of_seeds(tiny_models):
    _, var = tiny_models
    seeded = list(var.generate_steps([2, 6], cfg=[1.5, 3.0], seed=[11, 12]))
    generators = [torch.Generator().manual_seed(11), torch.Generator().manual_seed(12)]
    given = list(var.generate_steps([2, 6], cfg=[1.5, 3.0], generator=generators))
    assert all(torch.equal(a.tokens, b.tokens) for a, b in zip(seeded, given))


def test_one_value_for_all_rows_keeps_the_shared_generator(tiny_models):
    """An int seed for a batch is one generator for all rows (upstream's behaviour, which parity checks): rows with
    the same label and settings then differ; a list of equal settings is the same call as the one value."""
    _, var = tiny_models
    shared = list(var.generate_steps([4, 4], cfg=2.0, top_k=20, seed=5))
    assert not all(torch.equal(step.tokens[0], step.tokens[1]) for step in shared)
    as_lists = list(var.generate_steps([4, 4], cfg=[2.0, 2.0], top_k=[20, 20], top_p=[0.0, 0.0], seed=5))
    for a, b in zip(shared, as_lists):
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logits, b.logits)
        assert isinstance(b.cfg, float) and b.cfg == a.cfg


def test_the_step_records_each_rows_guidance_strength(tiny_models):
    _, var = tiny_models
    K = len(var.patch_nums)
    steps = list(var.generate_steps([1, 2, 3], cfg=[0.0, 1.5, 4.0], seed=[0, 0, 0]))
    for si, step in enumerate(steps):
        assert step.cfg == [0.0, 1.5 * si / (K - 1), 4.0 * si / (K - 1)]
        assert step.detached(decode=False).cfg == step.cfg


def test_greedy_rows_take_the_argmax_without_drawing(tiny_models, monkeypatch):
    """top_k 1 on one row only: that row takes the argmax (no draw from its generator); the other row draws."""
    _, var = tiny_models
    draws = []
    real_multinomial = torch.multinomial
    monkeypatch.setattr(torch, "multinomial", lambda *a, **kw: draws.append(a[0].shape[0]) or real_multinomial(*a, **kw))
    steps = list(var.generate_steps([3, 7], cfg=1.5, top_k=[1, 0], seed=[0, 1]))
    assert draws == [pn * pn for pn in var.patch_nums]           # row 1's positions, one call per scale
    assert all(torch.equal(step.tokens[0].flatten(), step.logits[0].argmax(-1)) for step in steps)


# ------------------------------------------------------------------------------------------ the sampling functions
def test_per_row_guidance_equals_the_one_value_mix_bit_for_bit():
    """t_b = cfg_b si / (K - 1) is a float64 number: 1 + t_b must be rounded to float32 once, as for one Python
    float. The strengths tested are ones where rounding t_b first and then adding 1 would give another float32."""
    strengths = [sampling.cfg_strength(tenths / 10, si, 10) for tenths in range(1, 41) for si in range(10)]
    t_B = [t for t in strengths if torch.tensor(1 + t) != 1 + torch.tensor(t)][:8]
    assert len(t_B) == 8
    logits_2BlV = torch.randn(16, 3, 50, generator=torch.Generator().manual_seed(0))
    guided_BlV = sampling.guide(logits_2BlV, t_B)
    for b, t in enumerate(t_B):
        assert torch.equal(guided_BlV[b], sampling.guide(logits_2BlV[[b, 8 + b]], t)[0]), t


def test_per_row_filters_equal_the_one_value_filters_bit_for_bit():
    """Ties at the k-th largest logit stay in, as with one k; rows with 0 are not filtered."""
    logits_BlV = torch.randn(6, 4, 40, generator=torch.Generator().manual_seed(1)).mul(4).round().div(4)   # ties
    top_k, top_p = [0, 1, 3, 7, 40, 100], [0.9, 0.0, 0.5, 0.0, 0.96, 0.3]
    filtered_BlV = sampling.filter_top_k_top_p(logits_BlV, top_k, top_p)
    for b in range(6):
        assert torch.equal(filtered_BlV[b:b + 1], sampling.filter_top_k_top_p(logits_BlV[b:b + 1], top_k[b], top_p[b]))
    assert torch.equal(sampling.filter_top_k_top_p(logits_BlV, [0] * 6, [0.0] * 6), logits_BlV)


def test_per_row_generators_draw_what_each_row_draws_alone():
    probs_BlV = torch.rand(3, 5, 20, generator=torch.Generator().manual_seed(2))
    logits_BlV = probs_BlV.log()
    rows = sampling.sample_tokens(logits_BlV, [torch.Generator().manual_seed(s) for s in (7, 8, 7)])
    for b, s in enumerate((7, 8, 7)):
        assert torch.equal(rows[b:b + 1], sampling.sample_tokens(logits_BlV[b:b + 1], torch.Generator().manual_seed(s)))
    noise = sampling.gumbel_noise(logits_BlV, [torch.Generator().manual_seed(s) for s in (7, 8, 7)])
    assert torch.equal(noise[0], noise[2]) and not torch.equal(noise[0], noise[1])
    assert torch.equal(noise[1:2], sampling.gumbel_noise(logits_BlV[1:2], torch.Generator().manual_seed(8)))


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kwargs, message", [
    (dict(cfg=[1.5, 2.0]), r"cfg has 2 values but the generation has 3 labels"),
    (dict(top_k=[1, 2, 3, 4]), r"top_k has 4 values but the generation has 3 labels"),
    (dict(cfg=[1.5, -1.0, 2.0]), r"cfg \(row 1\) must be a finite number >= 0"),
    (dict(top_k=[0, 10, 65]), r"top_k \(row 2\) must be an int in \[0, 64\]"),
    (dict(top_p=[0.5, 1.5, 0.0]), r"top_p \(row 1\) must be in \[0, 1\]"),
    (dict(seed=[1, 2]), r"seed has 2 values but the generation has 3 labels"),
    (dict(generator=[torch.Generator()]), r"generator has 1 values but the generation has 3 labels"),
])
def test_per_row_settings_are_checked_row_by_row(tiny_models, kwargs, message):
    _, var = tiny_models
    with pytest.raises(ValueError, match=message):
        next(var.generate_steps([1, 2, 3], **kwargs))


def test_a_row_of_a_batched_step_is_the_solo_step(tiny_models):
    """ScaleStep.row(b): what the scheduler hands each request of a batch, equal to the step of its solo run."""
    _, var = tiny_models
    settings = {"cfg": [1.5, 3.0], "top_k": [0, 20], "top_p": [0.0, 0.9], "seed": [4, 9]}
    batched = list(var.generate_steps([2, 7], capture_attention=True, **settings))
    for b, label in enumerate((2, 7)):
        solo = list(var.generate_steps([label], capture_attention=True,
                                       **{key: values[b] for key, values in settings.items()}))
        for step, alone in zip(batched, solo):
            row = step.row(b)
            assert torch.equal(row.tokens, alone.tokens) and row.cfg == pytest.approx(alone.cfg)
            torch.testing.assert_close(row.raw_logits, alone.raw_logits, atol=1e-3, rtol=0)
            torch.testing.assert_close(row.f_hat, alone.f_hat, atol=1e-3, rtol=0)
            assert [a.shape for a in row.attention] == [a.shape for a in alone.attention]
            torch.testing.assert_close(row.image(), alone.image(), atol=1e-3, rtol=0)
    with pytest.raises(IndexError, match="row 2 does not exist: this step has 2 rows"):
        batched[0].row(2)
