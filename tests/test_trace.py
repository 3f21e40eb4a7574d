"""The generation and encoding traces: recording never changes a result, the recorded numbers are the model's own
(KV-cached logits and attention equal the teacher-forced pass), one model serves two generations at once, and bad
input gets a specific error."""
import pickle
import threading

import pytest
import torch
import torch.nn.functional as F

from varlite.core.var import block_causal_bias

LABELS = [3, 7]


@pytest.fixture(scope="module")
def image():
    """Two smooth 64x64 test images in [-1, 1]."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    one = torch.stack([x, y, (x * y) * 2 - 0.5]).clamp(-1, 1)
    return torch.stack([one, -one.flip(-1)])


# ------------------------------------------------------------------------------------------ generation trace
@pytest.mark.parametrize("sampling", [dict(cfg=1.5), dict(cfg=3.0, top_k=10, top_p=0.9), dict(cfg=2.0, more_smooth=True)])
def test_attention_capture_and_statistics_never_change_the_result(tiny_models, sampling):
    _, var = tiny_models
    plain = list(var.generate_steps(LABELS, seed=5, **sampling))
    captured = list(var.generate_steps(LABELS, seed=5, capture_attention=True, **sampling))
    assert plain[0].attention is None and captured[0].attention is not None
    for step in plain:   # reading the derived statistics is pure: it changes nothing the loop made
        step.token_prob, step.entropy, step.candidates(3)
    for a, b in zip(plain, captured):
        assert torch.equal(a.tokens, b.tokens)
        assert torch.equal(a.f_hat, b.f_hat)
        assert torch.equal(a.logits, b.logits)
    assert torch.equal(plain[-1].image(), captured[-1].image())   # (the image is decoded from f_hat alone)


def test_generate_equals_the_stepped_path(tiny_models):
    _, var = tiny_models
    steps = list(var.generate_steps(LABELS, cfg=2.0, top_k=20, seed=11))
    assert torch.equal(var.generate(LABELS, cfg=2.0, top_k=20, seed=11), steps[-1].image())
    assert not torch.equal(var.generate(LABELS, cfg=2.0, top_k=20, seed=12), steps[-1].image())


@torch.no_grad()
def test_step_fields_describe_the_scale(tiny_models):
    _, var = tiny_models
    V, K = var.config.vocab_size, len(var.patch_nums)
    steps = list(var.generate_steps(LABELS, cfg=1.5, seed=2))
    f_hat = torch.zeros_like(steps[0].f_hat)
    for si, (step, pn) in enumerate(zip(steps, var.patch_nums)):
        assert (step.scale, step.pn, step.num_scales, step.total_tokens) == (si, pn, K, var.L)
        assert (step.begin, step.end) == var.begin_ends[si]
        assert step.cfg == pytest.approx(1.5 * si / (K - 1))
        assert step.tokens.shape == (2, pn, pn) and step.logits.shape == (2, pn * pn, V)
        # the guided logits are (1 + t) cond - t uncond of the raw rows
        cond, uncond = step.raw_logits[:2], step.raw_logits[2:]
        torch.testing.assert_close(step.logits, (1 + step.cfg) * cond - step.cfg * uncond)
        # probabilities, entropy and candidates describe softmax(guided logits)
        p_BlV = step.logits.softmax(-1)
        chosen = p_BlV.gather(-1, step.tokens.view(2, -1, 1)).view(2, pn, pn)
        torch.testing.assert_close(step.token_prob, chosen)
        torch.testing.assert_close(step.entropy, -(p_BlV * p_BlV.log()).sum(-1).view(2, pn, pn))
        topk_tokens, topk_probs = step.candidates(4)
        assert topk_tokens.shape == (2, pn, pn, 4)
        assert bool((topk_probs[..., :-1] >= topk_probs[..., 1:]).all())
        assert bool((step.token_prob <= topk_probs[..., 0] + 1e-7).all())
        torch.testing.assert_close(topk_probs, p_BlV.gather(-1, topk_tokens.view(2, -1, 4)).view(2, pn, pn, 4))
        # f_hat accumulates the contributions; contribution = phi_k(upsample(e[tokens]))
        f_hat = f_hat + step.contribution
        torch.testing.assert_close(step.f_hat, f_hat)
        quantizer = var.vqvae.quantize
        torch.testing.assert_close(step.contribution,
                                   quantizer.upsample_and_phi(quantizer.lookup(step.tokens.flatten(1), pn), si))
        assert set(step.timings) == {"transformer", "sampling", "quantizer"} and min(step.timings.values()) >= 0
        assert torch.equal(step.mask_rows(), block_causal_bias(var.patch_nums)[0, 0, step.begin:step.end] == 0)
    assert steps[-1].image().shape == (2, 3, 64, 64)
    assert 0 <= float(steps[-1].image().min()) and float(steps[-1].image().max()) <= 1


def test_a_detached_step_is_the_same_record_on_the_cpu_without_the_model(tiny_models, image):
    _, var = tiny_models
    live = list(var.generate_steps(LABELS, cfg=1.5, seed=4, capture_attention=True))[2]
    detached = pickle.loads(pickle.dumps(live.detached()))   # what an app cache stores and returns
    assert detached.decoder is None and detached.scale == 2 and detached.timings == live.timings
    for name in ("tokens", "embedding", "contribution", "f_hat", "logits", "raw_logits"):
        value = getattr(detached, name)
        assert value.device.type == "cpu" and not value.requires_grad and torch.equal(value, getattr(live, name))
    assert all(torch.equal(a, b) for a, b in zip(detached.attention, live.attention))
    assert torch.equal(detached.image(), live.image())
    assert torch.equal(detached.token_prob, live.token_prob) and torch.equal(detached.entropy, live.entropy)
    assert all(torch.equal(a, b) for a, b in zip(detached.candidates(3), live.candidates(3)))
    vqvae = var.vqvae
    encoded = list(vqvae.encode_steps(image))[1]
    encoded_cpu = pickle.loads(pickle.dumps(encoded.detached()))
    assert encoded_cpu.decoder is None and torch.equal(encoded_cpu.image(), encoded.image())
    assert torch.equal(encoded_cpu.psnr(), encoded.psnr()) and torch.equal(encoded_cpu.rest_norm, encoded.rest_norm)
    undecoded = live.detached(decode=False)      # (live's image was decoded above, so it is carried along)
    assert torch.equal(undecoded.image(), live.image())
    fresh = next(var.generate_steps(LABELS, seed=4)).detached(decode=False)
    assert fresh.decoder is None and fresh._image is None and fresh.scale == 0
    with pytest.raises(RuntimeError, match="no decoder attached.*VQVAE.decode_f_hat"):
        fresh.image()
    with pytest.raises(RuntimeError, match="no input image"):
        next(vqvae.quantize.residual_steps(vqvae.encode(image))).psnr()


def teacher_forced_pass(var, labels_B, tokens_Bl):
    """Logits of ``VAR.forward`` on a token sequence, and every block's attention probabilities recomputed from the
    block's attention input: softmax(q k^T + block-causal bias), checked to reproduce the block's own output
    (cloned in the hook: the block scales it in place afterwards)."""
    records = []
    hooks = [block.attn.register_forward_hook(lambda module, args, out: records.append((args[0], out.clone())))
             for block in var.blocks]
    try:
        with torch.no_grad():
            logits = var(labels_B, var.vqvae.idx_to_var_input(tokens_Bl))
            probs = []
            for block, (x_BLC, out_BLC) in zip(var.blocks, records):
                q, k, v = block.attn.qkv(x_BLC)
                p_BHLL = (q @ k.transpose(-2, -1) + var.attn_bias_for_masking).softmax(dim=-1)
                B, L, C = x_BLC.shape
                torch.testing.assert_close(block.attn.proj((p_BHLL @ v).transpose(1, 2).reshape(B, L, C)), out_BLC,
                                           atol=1e-5, rtol=1e-5)
                probs.append(p_BHLL)
    finally:
        for hook in hooks:
            hook.remove()
    return logits, probs


def test_kv_cached_logits_and_captured_attention_equal_the_teacher_forced_pass(tiny_models):
    _, var = tiny_models
    steps = list(var.generate_steps(LABELS, cfg=2.5, top_k=30, seed=3, capture_attention=True))
    tokens_Bl = [step.tokens.flatten(1) for step in steps]
    labels_B = torch.tensor(LABELS)
    tf_cond, attn_cond = teacher_forced_pass(var, labels_B, tokens_Bl)
    tf_uncond, _ = teacher_forced_pass(var, torch.full_like(labels_B, var.num_classes), tokens_Bl)
    for step in steps:
        rows = slice(step.begin, step.end)
        torch.testing.assert_close(step.raw_logits[:2], tf_cond[:, rows], atol=1e-5, rtol=0)
        torch.testing.assert_close(step.raw_logits[2:], tf_uncond[:, rows], atol=1e-5, rtol=0)
        assert len(step.attention) == len(var.blocks)
        for layer, captured in enumerate(step.attention):
            assert captured.shape == (2, var.config.num_heads, step.pn ** 2, step.end)
            torch.testing.assert_close(captured, attn_cond[layer][:, :, rows, :step.end], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(captured.sum(-1), torch.ones(captured.shape[:-1]))


def test_two_generations_at_once_on_one_model_equal_sequential_runs(tiny_models):
    _, var = tiny_models
    jobs = [([1], 21), ([4, 8], 42)]

    def run(labels, seed, barrier=None):
        tokens = []
        for step in var.generate_steps(labels, cfg=1.5, seed=seed):
            tokens.append(step.tokens)
            if barrier is not None:
                barrier.wait(timeout=30)    # both generations are mid-way at every scale: two KV caches live at once
        return tokens, step.image()

    sequential = [run(labels, seed) for labels, seed in jobs]
    barrier, results = threading.Barrier(2), [None, None]

    def worker(i):
        results[i] = run(*jobs[i], barrier)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for (seq_tokens, seq_image), (par_tokens, par_image) in zip(sequential, results):
        assert all(torch.equal(a, b) for a, b in zip(seq_tokens, par_tokens))
        assert torch.equal(seq_image, par_image)


# ------------------------------------------------------------------------------------------ encoding trace
def test_encoding_trace_matches_the_tokenizer(tiny_models, image):
    vqvae, _ = tiny_models
    steps = list(vqvae.encode_steps(image))
    with torch.no_grad():
        f = vqvae.encode(image)
        idx = vqvae.img_to_idx(image)
        f_hats = vqvae.img_to_f_hats(image)
        reconstruction = vqvae.reconstruct(image)
    rest = f
    codebook = vqvae.quantize.embedding.weight.detach()
    for si, (step, pn) in enumerate(zip(steps, vqvae.patch_nums)):
        assert (step.scale, step.pn, step.num_scales, step.vocab_size) == (si, pn, 4, 64)
        assert torch.equal(step.tokens.flatten(1), idx[si])
        torch.testing.assert_close(step.f_hat, f_hats[si])
        torch.testing.assert_close(step.rest, f - step.f_hat, atol=1e-6, rtol=1e-6)
        # the target is the rest seen at this scale; its tokens are the nearest codebook entries
        torch.testing.assert_close(step.target, F.interpolate(rest, size=(pn, pn), mode="area"))
        target_NCv = step.target.permute(0, 2, 3, 1).reshape(-1, codebook.shape[1])
        d_NV = torch.cdist(target_NCv, codebook)
        torch.testing.assert_close(d_NV.gather(1, step.tokens.view(-1, 1))[:, 0], d_NV.min(dim=1).values)
        torch.testing.assert_close(step.embedding, codebook[step.tokens].permute(0, 3, 1, 2))
        torch.testing.assert_close(step.rest_norm, step.rest.flatten(1).norm(dim=1) / f.flatten(1).norm(dim=1))
        assert step.codes_used == step.tokens.unique().numel()
        # (PSNR and rest_norm need not improve scale by scale: with these synthetic weights they do not)
        assert step.psnr().shape == (2,)
        rest = step.rest
    torch.testing.assert_close(steps[-1].image(), reconstruction.add(1).mul(0.5))
    mse = (steps[-1].image() - image.add(1).mul(0.5)).square().flatten(1).mean(1)
    torch.testing.assert_close(steps[-1].psnr(), 10 * torch.log10(1 / mse))


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kwargs, error, message", [
    (dict(labels=[11]), ValueError, r"label 11 is out of range: this model has 10 classes"),
    (dict(labels=[-1]), ValueError, r"label -1 is out of range"),
    (dict(labels=[0.5]), ValueError, r"labels must be a non-empty 1-D sequence of ints"),
    (dict(labels=[1.5]), ValueError, r"1-D sequence of ints"),
    (dict(labels=[1], cfg=-0.1), ValueError, r"cfg must be a finite number >= 0"),
    (dict(labels=[3], cfg=-0.5), ValueError, r"cfg must be a finite number >= 0"),
    (dict(labels=[1], top_k=-1), ValueError, r"top_k must be an int in \[0, 64\]"),
    (dict(labels=[1], top_k=65), ValueError, r"top_k must be an int in \[0, 64\]"),
    (dict(labels=[1], top_p=1.5), ValueError, r"top_p must be in \[0, 1\]"),
    (dict(labels=[3], top_p=-0.1), ValueError, r"top_p must be in \[0, 1\]"),
    # overrides: every check is editing.check_overrides'
    (dict(labels=[1, 2], overrides={4: (torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1, dtype=torch.bool))}),
     ValueError, r"override scale 4 does not exist: this model has K=4 scales, numbered 0\.\.3"),
    (dict(labels=[1, 2], overrides={2: (torch.zeros(3, 2, dtype=torch.long), torch.ones(3, 2, dtype=torch.bool))}),
     ValueError, r"tokens of scale 2 must have shape \(3, 3\), \(B, 3, 3\) or \(B, 9\); got \(3, 2\)"),
    (dict(labels=[1, 2], overrides={2: (torch.zeros(3, 3), torch.ones(3, 3, dtype=torch.bool))}),
     TypeError, r"tokens of scale 2 must be integer codebook indices; got dtype torch.float32"),
    (dict(labels=[1, 2], overrides={1: (torch.zeros(2, 2, dtype=torch.long), torch.ones(5, 2, 2, dtype=torch.bool))}),
     ValueError, r"scale 1: the token map / keep mask has batch 5 but the generation has batch 2"),
    (dict(labels=[3], overrides={1: (torch.zeros(3, 2, 2, dtype=torch.long), torch.ones(3, 2, 2, dtype=torch.bool))}),
     ValueError, r"scale 1: the token map / keep mask has batch 3 but the generation has batch 1"),
    (dict(labels=[1, 2], overrides={1: (torch.full((2, 2), 64), torch.ones(2, 2))}),
     ValueError, r"tokens of scale 1 must be codebook indices in \[0, 63\]; got values in \[64, 64\]"),
    (dict(labels=[3], overrides={1: (torch.full((1, 2, 2), 64), torch.ones(1, 2, 2, dtype=torch.bool))}),
     ValueError, r"tokens of scale 1 must be codebook indices in \[0, 63\]"),
])
def test_generation_rejects_bad_arguments(tiny_models, kwargs, error, message):
    _, var = tiny_models
    with pytest.raises(error, match=message):
        list(var.generate_steps(seed=0, **kwargs))
    if "overrides" not in kwargs:      # generate() runs the same checks (it consumes generate_steps)
        with pytest.raises(error, match=message):
            var.generate(seed=0, **kwargs)


@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (1, 1, 64, 64), (3, 64, 64)])
def test_encoding_rejects_images_of_the_wrong_size_or_channels(tiny_models, shape):
    vqvae, _ = tiny_models
    with pytest.raises(ValueError, match="expected an image batch of shape \\(B, 3, 64, 64\\)"):
        next(vqvae.encode_steps(torch.zeros(shape)))


def test_step_timings_count_the_loop_not_the_time_the_consumer_spends_between_steps(tiny_models, monkeypatch):
    """Each scale's lap clock starts when the loop resumes: a consumer that dwells on a step (a page drawing it)
    adds nothing to the next step's transformer / sampling / quantizer times. The clock is a fake one that only the
    consumer moves, so the loop's own laps are exactly 0 and the consumer's 100 s never show."""
    import types

    from varlite.core import trace
    now = [0.0]
    monkeypatch.setattr(trace, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    _, var = tiny_models
    for step in var.generate_steps([1, 2], seed=0):
        assert set(step.timings) == {"transformer", "sampling", "quantizer"}
        assert sum(step.timings.values()) == 0.0, step.timings
        now[0] += 100.0                                  # the consumer's time between two steps
