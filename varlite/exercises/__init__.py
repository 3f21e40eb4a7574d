"""Self-checking exercises for the lessons (``lessons/*.ipynb``), and the lessons' model loader.

One module per lesson (``lesson01`` ... ``lesson09``) holds that lesson's checks; ``_check`` holds the shared
machinery (the verdict, the comparisons that describe the first difference, the runner); ``models`` the loader.
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
- ERROR           the function raised: the exception, the line of the learner's code it came from, and a hint.

Checks never raise, so a notebook keeps running whatever the learner writes. The learner's function gets copies of
the inputs (so an in-place edit cannot corrupt the reference). ``rel_error`` is the CS231n-style helper for
comparing floats by hand.
"""

from __future__ import annotations

from ._check import CheckResult, rel_error
from .lesson01 import check_lookup, check_nearest_code
from .lesson02 import check_phi_index, check_residual_quantize
from .lesson03 import check_block_causal_mask, check_scale_of_tokens
from .lesson04 import check_adaln, check_l2_attention_weights
from .lesson05 import check_cfg_mix, check_top_k_top_p
from .lesson06 import check_drop_labels, check_per_scale_cross_entropy
from .lesson07 import check_inpaint_overrides, check_scale_keep_masks
from .lesson08 import check_attention_pairs, check_fit_power_law, check_raster_pairs
from .lesson09 import check_attention_capture_bytes, check_var_param_count
from .models import lesson_models

__all__ = [
    "CheckResult", "rel_error", "lesson_models",
    "check_nearest_code", "check_lookup",
    "check_residual_quantize", "check_phi_index",
    "check_scale_of_tokens", "check_block_causal_mask",
    "check_adaln", "check_l2_attention_weights",
    "check_cfg_mix", "check_top_k_top_p",
    "check_per_scale_cross_entropy", "check_drop_labels",
    "check_scale_keep_masks", "check_inpaint_overrides",
    "check_attention_pairs", "check_raster_pairs", "check_fit_power_law",
    "check_var_param_count", "check_attention_capture_bytes",
]
