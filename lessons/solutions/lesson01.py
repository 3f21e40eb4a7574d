"""Lesson 1 -- images as tokens: vector quantization and the codebook."""


def nearest_code(z_NCv, codebook_VCv):
    """For every row of z, the index of the nearest codebook vector (squared Euclidean distance)."""
    # ||z - e||^2 = ||z||^2 + ||e||^2 - 2 z.e : one matrix product for all N x V pairs
    d_NV = z_NCv.square().sum(1, keepdim=True) + codebook_VCv.square().sum(1) - 2 * z_NCv @ codebook_VCv.T
    return d_NV.argmin(dim=1)


def lookup(idx_Bl, codebook_VCv, side):
    """Codebook vectors of a row-major token map, channels first: (B, l) -> (B, Cv, side, side)."""
    B = idx_Bl.shape[0]
    vectors_BlCv = codebook_VCv[idx_Bl]
    return vectors_BlCv.transpose(1, 2).reshape(B, codebook_VCv.shape[1], side, side)
