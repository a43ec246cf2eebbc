"""Classical denoisers a user would otherwise run, with their standard settings.

    noisy    the input itself (the floor)
    bm3d     BM3D (`bm3d.bm3d_rgb`) with the true noise σ. Non-commercial licence: a
             benchmark baseline only, imported here on demand, never by the denoiser.
    nlm      scikit-image non-local means, fast mode, h = 0.8 σ, patch 5, distance 6
    tv       scikit-image TV (Chambolle), the best PSNR over weights 0.02, 0.05, 0.1, 0.2
             (an oracle choice, which favours TV)
    wavelet  scikit-image wavelet denoising, BayesShrink, soft threshold, in YCbCr

σ is the true noise standard deviation on [0, 1]: the spec's σ for gaussian noise, else
the measured std of (noisy - clean), the same oracle for every method.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from skimage import restoration

from .errors import UserError
from .metrics import psnr

TV_WEIGHTS = (0.02, 0.05, 0.1, 0.2)


def _noisy(noisy, clean, sigma):
    return noisy


def _bm3d(noisy, clean, sigma):
    try:
        import bm3d
    except ImportError:
        raise UserError("the bm3d baseline needs the 'bench' extra: pip install -e '.[bench]'") from None
    return bm3d.bm3d_rgb(noisy, sigma_psd=max(sigma, 1e-6))


def _nlm(noisy, clean, sigma):
    return restoration.denoise_nl_means(noisy, h=0.8 * sigma, sigma=sigma, patch_size=5,
                                        patch_distance=6, fast_mode=True, channel_axis=-1)


def _tv(noisy, clean, sigma):
    outs = [restoration.denoise_tv_chambolle(noisy, weight=w, channel_axis=-1) for w in TV_WEIGHTS]
    return max(outs, key=lambda o: psnr(clean, o))


def _wavelet(noisy, clean, sigma):
    return restoration.denoise_wavelet(noisy, method="BayesShrink", mode="soft",
                                       channel_axis=-1, convert2ycbcr=True, rescale_sigma=True)


BASELINES: dict[str, Callable[[np.ndarray, np.ndarray, float], np.ndarray]] = {
    "noisy": _noisy, "bm3d": _bm3d, "nlm": _nlm, "tv": _tv, "wavelet": _wavelet,
}
