"""DiffC settings and payload bytes (cod.diffc.payload): round trips, sizes, and clean errors
for every truncation, every flipped byte and crafted bad fields."""
import struct
import zlib

import pytest

from cod.diffc.bridge import DENOISING_TIMESTEPS, LATENT_ENCODING_TIMESTEPS, PIXEL_ENCODING_TIMESTEPS
from cod.diffc.payload import CPU_MAX_CHUNK_SIZE, DiffCConfig, DiffCPayload
from cod.errors import BitstreamError

STREAM = bytes(range(16))


def test_family_defaults_are_the_originals():
    px, lat = DiffCConfig.for_family("cod-pixel"), DiffCConfig.for_family("cod-latent")
    assert px.encoding_timesteps == PIXEL_ENCODING_TIMESTEPS and lat.encoding_timesteps == LATENT_ENCODING_TIMESTEPS
    assert px.finishing_timesteps == lat.finishing_timesteps == DENOISING_TIMESTEPS
    assert (px.encoding_guidance, px.decoding_guidance, lat.decoding_guidance) == (1.0, 3.0, 1.25)
    assert px.max_chunk_size == CPU_MAX_CHUNK_SIZE and px.chunk_padding == 2
    assert DiffCConfig.for_family("cod-pixel", max_chunk_size=16).max_chunk_size == 16
    with pytest.raises(ValueError):
        DiffCConfig.for_family("codlite")


@pytest.mark.parametrize("kw", [dict(max_chunk_size=1), dict(max_chunk_size=21), dict(chunk_padding=8, max_chunk_size=16), dict(chunk_padding=4, max_chunk_size=4),
                                dict(seed=-1), dict(seed=2**32), dict(encoding_guidance=float("nan")), dict(decoding_guidance=1e6), dict(encoding_timesteps=(5, 10))])
def test_config_validation(kw):
    with pytest.raises(ValueError):
        DiffCConfig(**kw)


def test_guidance_is_stored_as_float16():
    assert DiffCConfig(decoding_guidance=2.7).decoding_guidance == 2.69921875


@pytest.mark.parametrize("config", [
    DiffCConfig.for_family("cod-pixel"),
    DiffCConfig.for_family("cod-latent", max_chunk_size=16, seed=123456789, decoding_guidance=7.5),
    DiffCConfig(encoding_timesteps=(900, 500, 20), finishing_timesteps=(400, 10, 0), chunk_padding=0, max_chunk_size=20, encoding_guidance=2.0),
])
def test_round_trip(config):
    for n_steps in (0, 1, len(config.encoding_timesteps)):
        p = DiffCPayload(config, n_steps, STREAM)
        data = p.to_bytes()
        assert DiffCPayload.from_bytes(data) == p
        assert len(data) == DiffCPayload.overhead_bytes(config) + len(STREAM)


def test_overhead():
    """13 header bytes + CRC-32 with the original's schedules; explicit schedules cost
    2 + 2 n bytes each."""
    assert DiffCPayload.overhead_bytes(DiffCConfig.for_family("cod-pixel")) == 17
    assert DiffCPayload.overhead_bytes(DiffCConfig(encoding_timesteps=(900, 20))) == 17 + 6


def test_every_truncation_and_every_flipped_byte_is_an_error():
    config = DiffCConfig(encoding_timesteps=(900, 500, 20))
    data = DiffCPayload(config, 2, STREAM).to_bytes()
    for n in range(len(data)):
        with pytest.raises(BitstreamError):
            DiffCPayload.from_bytes(data[:n])
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x41
        with pytest.raises(BitstreamError):
            DiffCPayload.from_bytes(bytes(bad))
    with pytest.raises(BitstreamError):
        DiffCPayload.from_bytes(data + b"\x00")


def recrc(body: bytes) -> bytes:
    return body + struct.pack(">I", zlib.crc32(body))


@pytest.mark.parametrize("field,value,msg", [
    (0, 2, "version"),
    (1, 0x31, "schedule id"),
    (1, 0x13, "schedule id"),
    (2, 0x40 | 30, "max_chunk_size"),
    (2, 0xE0 | 5, "chunk_padding"),
])
def test_crafted_bad_fields_are_errors(field, value, msg):
    body = bytearray(DiffCPayload(DiffCConfig.for_family("cod-pixel"), 3, STREAM).to_bytes()[:-4])
    body[field] = value
    with pytest.raises(BitstreamError, match=msg):
        DiffCPayload.from_bytes(recrc(bytes(body)))


def test_crafted_step_count_and_schedules_are_errors():
    body = bytearray(DiffCPayload(DiffCConfig.for_family("cod-pixel"), 3, STREAM).to_bytes()[:-4])
    body[3:5] = struct.pack(">H", 143)
    with pytest.raises(BitstreamError, match="143 coded steps"):
        DiffCPayload.from_bytes(recrc(bytes(body)))
    # an explicit schedule that is not decreasing, and one longer than the payload
    cfg = DiffCConfig(encoding_timesteps=(900, 20))
    body = bytearray(DiffCPayload(cfg, 1, b"").to_bytes()[:-4])
    body[17:19] = struct.pack(">H", 950)  # (900, 950)
    with pytest.raises(BitstreamError, match="strictly decreasing"):
        DiffCPayload.from_bytes(recrc(bytes(body)))
    body[13:15] = struct.pack(">H", 999)
    with pytest.raises(BitstreamError, match="does not fit"):
        DiffCPayload.from_bytes(recrc(bytes(body)))
