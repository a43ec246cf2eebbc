"""64 px chunks per second for each noise kind, three ways, measured in the same run:

  paper_whole    the paper: noise whole 640 x 480 images (scikit-image), then cut them
  crop_first     crop 64 px chunks, then noise each crop with the scikit-image reference
                 (`noise.add_noise`, what eval and the CLI use)
  batched        all the crops in one float32 call, numpy (`noisebatch.add_noise_batch`,
                 backend="numpy": what runs where the compiled kernels can't be built)
  compiled       the same call on the compiled kernels (`_kernels.c`): what the training
                 pipeline runs

Each line: {"bench": "noise", "kind", "<way>_chunks_per_s", "ratio" (crop_first / paper),
"batched_vs_paper", "batched_vs_crop_first", "compiled_vs_batched", "compiled_vs_paper"};
medians of 5 runs on one core. `--quick` for a short run.
"""

from __future__ import annotations

import numpy as np
from _common import emit, median_time, quick

from distgan.noise import add_noise, parse_spec
from distgan.noisebatch import add_noise_batch
from distgan.tiling import split

KINDS = ["gaussian:25", "poisson:30", "speckle:0.02", "salt:0.02", "pepper:0.02", "s&p:0.05",
         "camera:1600", "mix:gaussian:15+s&p:0.02"]


def main() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((480, 640, 3)).astype(np.float32)  # one 640 x 480 photo-sized image
    n = 16 if quick() else 75  # the paper's 640 x 480 gives 70 whole 64 px chunks
    crops = [img[y : y + 64, x : x + 64] for y, x in zip(rng.integers(0, 417, n),
                                                           rng.integers(0, 577, n))]
    stack = np.stack(crops)
    for kind in KINDS:
        def crop_first(kind=kind):
            for c in crops:
                add_noise(c, kind, rng)

        def paper_whole(kind=kind):
            noisy, _ = add_noise(img, kind, rng)
            split(noisy, 64)

        specs = [parse_spec(kind)] * n

        def batched(specs=specs, backend="numpy"):
            add_noise_batch(stack, specs, rng, backend=backend)

        per_chunk = median_time(crop_first) / n
        per_image = median_time(paper_whole)
        per_batched = median_time(batched) / n
        per_compiled = median_time(lambda: batched(backend="native")) / n
        whole_chunks = (480 // 64) * (640 // 64)  # the paper kept only whole chunks: 70
        a, b, c, d = 1 / per_chunk, whole_chunks / per_image, 1 / per_batched, 1 / per_compiled
        emit(bench="noise", kind=kind, crop_first_chunks_per_s=round(a),
             paper_whole_chunks_per_s=round(b), batched_chunks_per_s=round(c),
             compiled_chunks_per_s=round(d), ratio=round(a / b, 2), batched_vs_paper=round(c / b, 2),
             batched_vs_crop_first=round(c / a, 2), compiled_vs_batched=round(d / c, 2),
             compiled_vs_paper=round(d / b, 2))


if __name__ == "__main__":
    main()
