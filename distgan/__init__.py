"""distgan: a Ray-distributed denoising GAN and an any-size photo denoiser."""

__version__ = "0.1.0"

from . import denoise as _denoise_module  # noqa: E402  (numpy only until a model is loaded)

# `distgan.denoise(image, model=None, strength=1.0, noise_level="auto")` -> array.
# The submodule stays importable as `from distgan.denoise import ...`.
denoise = _denoise_module.denoise

__all__ = ["denoise", "__version__"]
