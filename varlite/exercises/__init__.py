"""Self-checking exercises for the lessons (``lessons/*.ipynb``), and the lessons' model loader.

One module per lesson with coding exercises (``lesson01`` ... ``lesson10``, the capstone, with its hints and named
mistakes in ``capstone_hints`` and ``capstone_mistakes``; ``lesson12``) holds that lesson's checks, lesson 6's loss
terms of the VQGAN kind (6.5, 6.6) in ``lesson06_vqgan``; ``_check`` holds the shared machinery (the verdict, the
comparisons that describe the first difference, the runner); ``models`` the loader; ``grade``, ``sandbox`` and
``wire`` (what travels between the grader and its worker) the teachers' grading mode.
Everything a notebook uses is importable from here: ``from varlite import exercises as ex; ex.check_lookup(...)``.

Dimension key: B batch, N vectors, Cv latent channels, V vocabulary, K scales, pn_k side of scale k, l tokens of one
scale, L all tokens, C width, D condition width, H heads, c head dim, h,w one scale's side.

Every ``check_<name>(fn)`` runs a learner's function on a few inputs drawn from fixed seeds, compares the answer with
what varlite itself computes (the library is the reference: ``MultiScaleQuantizer.nearest_code``,
``block_causal_bias``, ``sampling.filter_top_k_top_p`` ...), prints a verdict and returns a ``CheckResult``:

- PASSED          every case agrees with the library;
- NOT ATTEMPTED   the function still raises ``NotImplementedError`` (the stub in the notebook): the lesson goes on
                  with the library's version, so an unsolved notebook still runs top to bottom;
- WRONG           which case, which element, the expected and the obtained value, and -- when the answer is exactly
                  what a known mistake produces (argmax for argmin, the mask transposed, the guidance sign flipped,
                  the nucleus keeping the wrong tail ...) -- the name of that mistake and how to fix it;
- ERROR           the function raised: the exception, the line of the learner's code it came from, and a hint;
- REFUSED         the function called the library function it was meant to write (each check runs the learner's
                  code with those functions disabled: ``Exercise.shortcuts``), or reaches past its arguments (into the
                  checker, the reference solutions or the program's frames, or a function kept in a default
                  argument: ``_check.reaches_outside``).

Hints come in three tiers: a WRONG or ERROR verdict prints the idea (tier 1); ``hint(2)`` gives the approach and
``hint(3)`` the code, for the exercise that failed last. Every check also runs hidden cases, whose inputs its
messages never describe. ``python -m varlite.exercises.grade FOLDER --out grades.csv`` grades a folder of learners'
notebooks, each learner's functions in a separate, guarded process that sees only their source and each call's inputs
(``sandbox``).

Checks never raise, so a notebook keeps running whatever the learner writes. The learner's function gets copies of
the inputs (so an in-place edit cannot corrupt the reference). ``rel_error`` is the CS231n-style helper for
comparing floats by hand.
"""

from __future__ import annotations

from ._check import EXERCISES, CheckResult, hint, rel_error
from .lesson01 import check_lookup, check_nearest_code
from .lesson02 import check_f_hat_from_tokens, check_residual_quantize
from .lesson03 import check_block_causal_mask, check_teacher_forcing_input
from .lesson04 import check_adaln, check_l2_attention_weights
from .lesson05 import check_sample_scale, check_top_k_top_p
from .lesson06 import check_per_scale_cross_entropy, check_tokenizer_loss, check_train_step, check_vq_loss
from .lesson06_vqgan import check_adaptive_weight, check_perceptual_distance
from .lesson07 import check_scale_keep_masks
from .lesson08 import check_attention_pairs, check_fit_power_law
from .lesson09 import check_kv_cache_bytes, check_var_param_count
from .lesson10 import (check_adaln_block, check_attention, check_encode_tokens, check_generate, check_guided_logits,
                       check_logits_head, check_my_var, check_phi_of_scale, check_var_forward, check_var_input)
from .lesson12 import check_fit_paper_form, check_frechet_distance, check_inception_score
from .models import lesson_models

__all__ = [
    "CheckResult", "EXERCISES", "hint", "rel_error", "lesson_models",
    "check_nearest_code", "check_lookup",
    "check_residual_quantize", "check_f_hat_from_tokens",
    "check_teacher_forcing_input", "check_block_causal_mask",
    "check_adaln", "check_l2_attention_weights",
    "check_top_k_top_p", "check_sample_scale",
    "check_per_scale_cross_entropy", "check_vq_loss", "check_tokenizer_loss", "check_train_step",
    "check_perceptual_distance", "check_adaptive_weight",
    "check_scale_keep_masks",
    "check_attention_pairs", "check_fit_power_law",
    "check_var_param_count", "check_kv_cache_bytes",
    "check_phi_of_scale", "check_encode_tokens", "check_var_input", "check_attention", "check_adaln_block",
    "check_logits_head", "check_var_forward", "check_guided_logits", "check_generate", "check_my_var",
    "check_fit_paper_form", "check_frechet_distance", "check_inception_score",
]
