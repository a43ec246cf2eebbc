"""distgan: a Ray-distributed denoising GAN and an any-size photo denoiser."""

__version__ = "0.1.0"
