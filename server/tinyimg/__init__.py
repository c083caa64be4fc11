"""TinyIMGserver: serve diffusion image models over HTTP, standalone or on Kubernetes."""

__version__ = "0.1.0"
