import struct
import zlib

import numpy as np
import pytest

from cod import bitstream as bs
from cod.errors import BitstreamError, ModelMismatchError


@pytest.mark.parametrize(
    "indices,bits,hexstr",
    [([1, 2, 3, 15, 0, 7], 4, "123f07"), ([5, 200, 255], 8, "05c8ff"), ([5, 3, 1], 3, "ac80")],
)
def test_pack_examples_from_spec(indices, bits, hexstr):
    assert bs.pack_indices(np.array(indices), bits).hex() == hexstr
    assert bs.unpack_indices(bytes.fromhex(hexstr), len(indices), bits).tolist() == indices


@pytest.mark.parametrize("bits", [1, 3, 4, 5, 8, 11, 16])
def test_pack_roundtrip(bits):
    rng = np.random.default_rng(bits)
    for n in (0, 1, 7, 100):
        idx = rng.integers(0, 2**bits, n)
        data = bs.pack_indices(idx, bits)
        assert len(data) == bs.packed_size(n, bits)
        assert np.array_equal(bs.unpack_indices(data, n, bits), idx)


def test_pack_rejects_out_of_range():
    with pytest.raises(ValueError):
        bs.pack_indices(np.array([16]), 4)
    with pytest.raises(BitstreamError):
        bs.unpack_indices(b"\x12", 3, 4)


def _sample(settings=b"", diffc=None, coding=0, chroma=None):
    """A v1 container, or (``diffc`` bytes) a v3 DiffC one with fixed-length (coding 0) or
    range-coded indices, or (``chroma`` bytes) a v4 one with chroma side information."""
    header = bs.CodHeader(family=1 if diffc is None else 2, ds=16, bits=8, model_tag=0xBEEF, height=37, width=53, settings=settings,
                          coding=coding, prior_tag=0x1234 if coding else 0, diffc=diffc is not None, chroma=chroma is not None)
    return header, bs.write_cod(header, bytes(range(12)), diffc, chroma)


DIFFC = bytes(range(100, 140))  # stands for a DiffC payload: the container does not look inside


def test_container_roundtrip_and_layout():
    header, data = _sample(b"\x01\x02")
    f = bs.read_cod(data)
    assert f.header == header and f.payload == bytes(range(12)) and f.size == len(data)
    assert data[:4] == b"CoD\x01"
    assert int.from_bytes(data[9:13], "big") == 37 and int.from_bytes(data[13:17], "big") == 53
    assert len(data) == bs.HEADER_MIN + 2 + 12
    assert f.bpp == pytest.approx(8 * len(data) / (37 * 53))


@pytest.mark.parametrize("coding", [0, 2])
def test_diffc_container_roundtrip_and_layout(coding):
    """v3: v2's header with coding 0 allowed, then the index length; indices, then DiffC."""
    header, data = _sample(b"", DIFFC, coding)
    f = bs.read_cod(data)
    assert f.header == header and f.header.version == 3 and f.payload == bytes(range(12)) and f.diffc == DIFFC
    assert data[:4] == b"CoD\x03" and data[18:21] == bytes([coding]) + (b"\x12\x34" if coding else b"\0\0")
    assert struct.unpack(">II", data[21:29]) == (12, 12 + len(DIFFC))
    assert len(data) == 33 + 12 + len(DIFFC) and f.size == len(data)
    assert data[33:] == bytes(range(12)) + DIFFC
    empty = bs.read_cod(bs.write_cod(header, b"", b""))  # no indices, no DiffC: still a v3 file
    assert empty.payload == b"" and empty.diffc == b""
    with pytest.raises(ValueError):  # the header says whether a DiffC payload goes with it
        bs.write_cod(header, b"")
    with pytest.raises(ValueError):
        bs.write_cod(bs.CodHeader(1, 16, 8, 0, 1, 1), b"", DIFFC)


CHROMA = bytes(range(200, 230))  # stands for chroma side information (cod.chroma)


@pytest.mark.parametrize("coding", [0, 1])
def test_chroma_container_roundtrip_and_layout(coding):
    """v4: v3's layout, the chroma side information after the indices."""
    header, data = _sample(b"", coding=coding, chroma=CHROMA)
    f = bs.read_cod(data)
    assert f.header == header and f.header.version == 4 and f.payload == bytes(range(12)) and f.chroma == CHROMA and f.diffc is None
    assert data[:4] == b"CoD\x04" and data[18:21] == bytes([coding]) + (b"\x12\x34" if coding else b"\0\0")
    assert struct.unpack(">II", data[21:29]) == (12, 12 + len(CHROMA))
    assert data[33:] == bytes(range(12)) + CHROMA and f.size == len(data)
    with pytest.raises(ValueError):  # the header says whether chroma goes with it
        bs.write_cod(header, b"")
    with pytest.raises(ValueError):
        bs.write_cod(bs.CodHeader(1, 16, 8, 0, 1, 1), b"", chroma=CHROMA)
    with pytest.raises(ValueError, match="not both"):  # DiffC and chroma do not share a file
        bs.write_cod(bs.CodHeader(1, 16, 8, 0, 1, 1, diffc=True, chroma=True), b"", DIFFC, CHROMA)


def _recrc(data: bytearray) -> bytes:
    """``data`` (a settings-free container) with its CRC recomputed: past the CRC check."""
    head = 29 if data[3] in (3, 4) else 22 + 3 * (data[3] == 2)
    data[head : head + 4] = struct.pack(">I", zlib.crc32(bytes(data[head + 4 :]), zlib.crc32(bytes(data[:head]))))
    return bytes(data)


def test_diffc_container_crafted_fields():
    _, data = _sample(b"", DIFFC)
    bad = bytearray(data)
    bad[21:25] = struct.pack(">I", 12 + len(DIFFC) + 1)  # more indices than payload
    with pytest.raises(BitstreamError, match="bytes of indices"):
        bs.read_cod(_recrc(bad))
    bad = bytearray(data)
    bad[18] = 3  # unknown index coding
    with pytest.raises(BitstreamError, match="index coding 3"):
        bs.read_cod(_recrc(bad))
    bad = bytearray(data)
    bad[21:25] = struct.pack(">I", 12 + len(DIFFC))  # all indices, an empty DiffC part: the codec's business
    assert bs.read_cod(_recrc(bad)).diffc == b""


@pytest.mark.parametrize("diffc,chroma", [(None, None), (DIFFC, None), (None, CHROMA)], ids=["v1", "v3", "v4"])
def test_every_single_bit_flip_is_detected(diffc, chroma):
    _, data = _sample(b"", diffc, chroma=chroma)
    for i in range(len(data) * 8):
        bad = bytearray(data)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(BitstreamError):
            bs.read_cod(bytes(bad))


@pytest.mark.parametrize("diffc,chroma", [(None, None), (DIFFC, None), (None, CHROMA)], ids=["v1", "v3", "v4"])
def test_every_truncation_is_detected(diffc, chroma):
    _, data = _sample(b"xyz", diffc, chroma=chroma)
    for n in range(len(data)):
        with pytest.raises(BitstreamError):
            bs.read_cod(data[:n])
    with pytest.raises(BitstreamError, match="trailing"):
        bs.read_cod(data + b"\0")


def test_error_messages():
    _, data = _sample()
    with pytest.raises(BitstreamError, match="bad magic"):
        bs.read_cod(b"PNG" + data[3:])
    with pytest.raises(BitstreamError, match="version 7"):
        bs.read_cod(data[:3] + b"\x07" + data[4:])
    bad = bytearray(data)
    bad[-1] ^= 0xFF
    with pytest.raises(BitstreamError, match="CRC"):
        bs.read_cod(bytes(bad))


def test_model_mismatch():
    header, data = _sample()
    f = bs.read_cod(data)
    bs.check_model(f.header, 1, 16, 8, 0xBEEF, "m")
    with pytest.raises(ModelMismatchError, match="ds=16"):
        bs.check_model(f.header, 1, 8, 8, 0xBEEF, "m")
    with pytest.raises(ModelMismatchError, match="other weights"):
        bs.check_model(f.header, 1, 16, 8, 0x1234, "m")


def test_official_layout():
    data = bs.write_official(96, 128, b"\xaa")
    assert data[:4].hex() == "80006000"  # CoD-Lite: width first
    assert bs.read_official(data) == (96, 128, b"\xaa")
    swapped = bs.write_official(192, 256, b"", height_first=True)
    assert swapped[:4].hex() == "c0000001"  # CoD parent CLI: height first (spec §10)
    assert bs.read_official(swapped, height_first=True)[:2] == (192, 256)
    with pytest.raises(BitstreamError):
        bs.write_official(70000, 10, b"")
    with pytest.raises(BitstreamError):
        bs.read_official(b"\x01\x00")


def test_grid_size_and_tag():
    assert bs.grid_size(1, 1, 32, 32) == (1, 1)
    assert bs.grid_size(1080, 1920, 16, 16) == (68, 120)
    assert bs.grid_size(1080, 1920, 4, 16) == (272, 480)
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert bs.model_tag_of(a) == bs.model_tag_of(a.copy()) != bs.model_tag_of(a + 1)


def test_random_bytes_and_mutations_only_raise_bitstream_errors():
    """The parser survives any input: random blobs and mutated valid files."""
    rng = np.random.default_rng(0)
    _, data = _sample(b"ab")
    for trial in range(3000):
        kind = trial % 3
        if kind == 0:
            blob = rng.integers(0, 256, rng.integers(0, 80)).astype(np.uint8).tobytes()
        elif kind == 1:
            blob = b"CoD" + bytes([1 + trial // 3 % 3]) + rng.integers(0, 256, rng.integers(0, 60)).astype(np.uint8).tobytes()
        else:
            arr = np.frombuffer(data, np.uint8).copy()
            pos = rng.integers(0, len(arr), rng.integers(1, 6))
            arr[pos] = rng.integers(0, 256, len(pos))
            blob = arr.tobytes()
            if blob == data:
                continue
        with pytest.raises(BitstreamError):
            bs.read_cod(blob)
