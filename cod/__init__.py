"""cod: diffusion-based generative image compression (CoD, CoD-Lite).

    import cod
    codec = cod.load("codlite-0.0312", weights="codlite-0.0312.safetensors")
    data = codec.compress("photo.png")   # .cod bytes
    image = codec.decompress(data)       # PIL.Image

Every family (CoD-Lite, CoD pixel, CoD latent) loads through cod.load (cod.families);
cod.MODELS names every model of every family (cod.zoo). docs/architecture.md maps the package.
"""
from cod.cod_codec import CoDCodec
from cod.codec import CoDLiteCodec
from cod.errors import BitstreamError, CheckpointError, CodError, ConfigError, ImageError, ModelMismatchError
from cod.families import FAMILIES, installed_weights, load, load_cod, load_network
from cod.zoo import MODELS, RATES

__version__ = "0.1.0"
__all__ = [
    "load", "load_cod", "load_network", "installed_weights", "FAMILIES", "CoDLiteCodec", "CoDCodec", "MODELS", "RATES",
    "CodError", "BitstreamError", "CheckpointError", "ConfigError", "ImageError", "ModelMismatchError",
]
