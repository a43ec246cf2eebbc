"""64 px chunks per second for each noise kind, two ways, measured in the same run:

  crop_first     distgan: crop 64 px chunks, then noise only the crops
  paper_whole    the paper: noise whole 640 x 480 images, then cut them into chunks

Each line: {"bench": "noise", "kind", "crop_first_chunks_per_s", "paper_whole_chunks_per_s",
"ratio"}; medians of 5 runs on one core. `--quick` for a short run.
"""

from __future__ import annotations

import numpy as np
from _common import emit, median_time, quick

from distgan.noise import add_noise
from distgan.tiling import split

KINDS = ["gaussian:25", "poisson:30", "speckle:0.02", "salt:0.02", "pepper:0.02", "s&p:0.05",
         "camera:1600", "mix:gaussian:15+s&p:0.02"]


def main() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((480, 640, 3)).astype(np.float32)  # one 640 x 480 photo-sized image
    n = 16 if quick() else 75  # the paper's 640 x 480 gives 70 whole 64 px chunks
    crops = [img[y : y + 64, x : x + 64] for y, x in zip(rng.integers(0, 417, n),
                                                           rng.integers(0, 577, n))]
    for kind in KINDS:
        def crop_first(kind=kind):
            for c in crops:
                add_noise(c, kind, rng)

        def paper_whole(kind=kind):
            noisy, _ = add_noise(img, kind, rng)
            split(noisy, 64)

        per_chunk = median_time(crop_first) / n
        per_image = median_time(paper_whole)
        whole_chunks = (480 // 64) * (640 // 64)  # the paper kept only whole chunks: 70
        a, b = 1 / per_chunk, whole_chunks / per_image
        emit(bench="noise", kind=kind, crop_first_chunks_per_s=round(a),
             paper_whole_chunks_per_s=round(b), ratio=round(a / b, 2))


if __name__ == "__main__":
    main()
