"""Lesson 9 -- the real thing: the size of VAR-d and of its KV cache."""
from varlite.core.configs import OFFICIAL_PATCH_NUMS


def var_param_count(depth):
    """Learned parameters of the official VAR-d{depth}: C = 64 depth, depth heads, V = 4096, Cv = 32, 1000 classes."""
    C, heads, V, Cv, classes = 64 * depth, depth, 4096, 32, 1000
    L, K = sum(pn * pn for pn in OFFICIAL_PATCH_NUMS), len(OFFICIAL_PATCH_NUMS)
    attention = 3 * C * C + 2 * C + heads + C * C + C   # qkv (no k bias), q/v biases, temperatures, out projection
    ffn = C * 4 * C + 4 * C + 4 * C * C + C             # fc1, fc2
    adaln = C * 6 * C + 6 * C                           # Linear(SiLU(cond)) -> 6C
    blocks = depth * (attention + ffn + adaln)
    embeddings = C + L * C + Cv * C + C + (classes + 1) * C + K * C   # pos_start, pos_1LC, word_embed, class, level
    head = C * 2 * C + 2 * C + C * V + V                # AdaLN before the head, the head
    return blocks + embeddings + head


def kv_cache_bytes(patch_nums, depth, embed_dim, batch, bytes_per_value=4):
    """Bytes in the KV cache after a guided generation: keys and values, every block, 2 x batch rows, all L tokens."""
    L = sum(pn * pn for pn in patch_nums)
    return 2 * depth * (2 * batch) * L * embed_dim * bytes_per_value
