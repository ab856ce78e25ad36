"""cod: diffusion-based generative image compression (CoD, CoD-Lite).

    import cod
    codec = cod.load("codlite-0.0312", weights="codlite-0.0312.safetensors")
    data = codec.compress("photo.png")   # .cod bytes
    image = codec.decompress(data)       # PIL.Image
"""
from cod.codec import CoDLiteCodec, installed_weights, load
from cod.errors import BitstreamError, CheckpointError, CodError, ImageError, ModelMismatchError
from cod.zoo import MODELS, RATES

__version__ = "0.1.0"
__all__ = ["load", "CoDLiteCodec", "installed_weights", "MODELS", "RATES", "CodError", "BitstreamError", "CheckpointError", "ImageError", "ModelMismatchError"]
