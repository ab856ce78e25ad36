"""DiffC settings and payload bytes (cod.diffc.payload): round trips, sizes, and clean errors
for truncated headers and crafted bad fields (the container's CRC-32 catches the rest)."""
import struct

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
    """13 header bytes with the original's schedules (version 1 added a CRC-32, which the
    container has); explicit schedules cost 2 + 2 n bytes each."""
    assert DiffCPayload.overhead_bytes(DiffCConfig.for_family("cod-pixel")) == 13
    assert DiffCPayload.overhead_bytes(DiffCConfig(encoding_timesteps=(900, 20))) == 13 + 6


def test_truncated_headers_are_errors():
    config = DiffCConfig(encoding_timesteps=(900, 500, 20))
    data = DiffCPayload(config, 2, STREAM).to_bytes()
    head = DiffCPayload.overhead_bytes(config)
    for n in range(head):
        with pytest.raises(BitstreamError, match="truncated"):
            DiffCPayload.from_bytes(data[:n])
    with pytest.raises(BitstreamError, match="version 1"):  # the old layout is refused by name
        DiffCPayload.from_bytes(b"\x01" + data[1:])


def test_stop_timestep_and_describe():
    config = DiffCConfig.for_family("cod-pixel")
    assert DiffCPayload(config, 0, b"").stop_timestep == 1000
    p = DiffCPayload(config, 4, STREAM)
    assert p.stop_timestep == 897
    d = p.describe()
    assert (d["diffc_steps"], d["diffc_schedule_steps"], d["diffc_stop_timestep"], d["diffc_max_chunk_size"], d["diffc_stream_bytes"]) == (4, 142, 897, 8, 16)


@pytest.mark.parametrize("field,value,msg", [
    (0, 3, "version"),
    (1, 0x31, "schedule id"),
    (1, 0x13, "schedule id"),
    (2, 0x40 | 30, "max_chunk_size"),
    (2, 0xE0 | 5, "chunk_padding"),
])
def test_crafted_bad_fields_are_errors(field, value, msg):
    body = bytearray(DiffCPayload(DiffCConfig.for_family("cod-pixel"), 3, STREAM).to_bytes())
    body[field] = value
    with pytest.raises(BitstreamError, match=msg):
        DiffCPayload.from_bytes(bytes(body))


def test_crafted_step_count_and_schedules_are_errors():
    body = bytearray(DiffCPayload(DiffCConfig.for_family("cod-pixel"), 3, STREAM).to_bytes())
    body[3:5] = struct.pack(">H", 143)
    with pytest.raises(BitstreamError, match="143 coded steps"):
        DiffCPayload.from_bytes(bytes(body))
    # an explicit schedule that is not decreasing, and one longer than the payload
    cfg = DiffCConfig(encoding_timesteps=(900, 20))
    body = bytearray(DiffCPayload(cfg, 1, b"").to_bytes())
    body[17:19] = struct.pack(">H", 950)  # (900, 950)
    with pytest.raises(BitstreamError, match="strictly decreasing"):
        DiffCPayload.from_bytes(bytes(body))
    body[13:15] = struct.pack(">H", 999)
    with pytest.raises(BitstreamError, match="does not fit"):
        DiffCPayload.from_bytes(bytes(body))
