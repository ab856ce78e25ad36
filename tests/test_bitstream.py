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


def _sample(settings=b""):
    header = bs.CodHeader(family=1, ds=16, bits=8, model_tag=0xBEEF, height=37, width=53, settings=settings)
    return header, bs.write_cod(header, bytes(range(12)))


def test_container_roundtrip_and_layout():
    header, data = _sample(b"\x01\x02")
    f = bs.read_cod(data)
    assert f.header == header and f.payload == bytes(range(12)) and f.size == len(data)
    assert data[:4] == b"CoD\x01"
    assert int.from_bytes(data[9:13], "big") == 37 and int.from_bytes(data[13:17], "big") == 53
    assert len(data) == bs.HEADER_MIN + 2 + 12
    assert f.bpp == pytest.approx(8 * len(data) / (37 * 53))


def test_every_single_bit_flip_is_detected():
    _, data = _sample()
    for i in range(len(data) * 8):
        bad = bytearray(data)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(BitstreamError):
            bs.read_cod(bytes(bad))


def test_every_truncation_is_detected():
    _, data = _sample(b"xyz")
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
            blob = b"CoD\x01" + rng.integers(0, 256, rng.integers(0, 60)).astype(np.uint8).tobytes()
        else:
            arr = np.frombuffer(data, np.uint8).copy()
            pos = rng.integers(0, len(arr), rng.integers(1, 6))
            arr[pos] = rng.integers(0, 256, len(pos))
            blob = arr.tobytes()
            if blob == data:
                continue
        with pytest.raises(BitstreamError):
            bs.read_cod(blob)
