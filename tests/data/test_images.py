"""Image I/O without torchvision: round trips, odd file modes, corrupt files, resizing, grids."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from rezdiff.data.images import (
    UnreadableImageError,
    decode_image,
    from_array,
    image_size,
    load_image,
    make_grid,
    resize,
    save_image,
    to_uint8,
    verify_image,
)
from tests.data.png_files import break_zlib, png_bytes


def _random_image(channels, height=12, width=17, seed=0):
    return torch.rand(channels, height, width, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("channels", [1, 3])
def test_png_round_trip_within_one_level(tmp_path, channels):
    image = _random_image(channels)
    path = tmp_path / "nested" / "dir" / "x.png"
    save_image(image, path)
    assert Image.open(path).mode == ("L" if channels == 1 else "RGB")
    loaded = load_image(path, channels=channels)
    assert loaded.shape == image.shape and loaded.dtype == torch.float32
    assert (loaded - image).abs().max() <= 1 / 255 + 1e-6


def test_save_image_batch_makes_a_grid(tmp_path):
    save_image(_random_image(3, 8, 8).expand(5, -1, -1, -1), tmp_path / "grid.png")
    assert Image.open(tmp_path / "grid.png").size == (3 * 10 + 2, 2 * 10 + 2)  # 3 columns, 2 rows


def test_sixteen_bit_png_is_scaled_by_65535(tmp_path):
    values = np.array([[0, 1000, 32768], [40000, 65535, 12345]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    loaded = load_image(tmp_path / "deep.png", channels=1)
    expected = torch.from_numpy(values.astype(np.float64) / 65535 * 2 - 1).float()
    torch.testing.assert_close(loaded[0], expected, atol=1e-6, rtol=0)
    assert torch.equal(load_image(tmp_path / "deep.png", channels=3), loaded.expand(3, -1, -1))


@pytest.mark.parametrize("samples", [2, 3, 4])  # grey + alpha, RGB (48-bit), RGBA (64-bit)
@pytest.mark.parametrize("interlace", [False, True])
def test_sixteen_bit_colour_png_keeps_every_bit(tmp_path, samples, interlace):
    """Pillow reduces 16-bit colour PNGs to 8 bits; every sample must come back exactly, whatever the row
    filters (all five occur: each row uses the next) and with Adam7 interlacing."""
    values = np.random.default_rng(samples).integers(0, 65536, (13, 11, samples), dtype=np.uint16)
    path = tmp_path / "deep.png"
    for first_filter in range(5):
        path.write_bytes(png_bytes(values, interlace=interlace, first_filter=first_filter))
        assert np.array_equal(decode_image(path), values)
    if samples > 2:  # what Pillow alone gives (grey + alpha it opens as RGBA)
        assert (np.asarray(Image.open(path)).astype(np.uint16) == values >> 8).all()
    torch.testing.assert_close(load_image(path), from_array(values), rtol=0, atol=0)


def test_sixteen_bit_colour_png_honours_exif_rotation_and_colour_key(tmp_path):
    """The same orientation as Pillow applies to the 8-bit file of the high bytes; a tRNS colour key (the
    16-bit RGB's transparent colour) turns exactly the matching pixels white."""
    values = np.random.default_rng(5).integers(0, 65536, (6, 9, 3), dtype=np.uint16)
    values[2, 3] = (1, 2, 3)
    values[4, 4] = (1, 2, 258)  # same high bytes as the key, different low bytes: stays opaque
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: shown turned by 90 degrees
    extra = ((b"eXIf", exif.tobytes()[6:]),)  # PNG's eXIf holds the TIFF data without "Exif\0\0"
    (tmp_path / "deep.png").write_bytes(png_bytes(values, extra=extra))
    (tmp_path / "high.png").write_bytes(png_bytes((values >> 8).astype(np.uint8), extra=extra))
    decoded = decode_image(tmp_path / "deep.png")
    upright = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "high.png")))
    assert decoded.shape == (9, 6, 3) and np.array_equal(decoded >> 8, upright)
    assert image_size(tmp_path / "deep.png") == (9, 6)

    key = (b"tRNS", np.array([1, 2, 3], dtype=">u2").tobytes())
    (tmp_path / "keyed.png").write_bytes(png_bytes(values, extra=(key,)))
    keyed = load_image(tmp_path / "keyed.png")
    white = torch.zeros(6, 9, dtype=torch.bool)
    white[2, 3] = True
    assert torch.equal(keyed[:, white], torch.ones(3, 1))
    torch.testing.assert_close(keyed[:, ~white], from_array(values)[:, ~white], rtol=0, atol=0)


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (0, 0, 0, 0)  # fully transparent -> white
    rgba[1, 0] = (0, 0, 0, 102)  # 40 % black over white -> 0.6
    rgba[1, 1] = (0, 255, 0, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    loaded = (load_image(tmp_path / "alpha.png") + 1) / 2
    assert loaded.shape == (3, 2, 2)
    torch.testing.assert_close(loaded[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(loaded[:, 0, 1], torch.ones(3))
    torch.testing.assert_close(loaded[:, 1, 0], torch.full((3,), 0.6), atol=1e-6, rtol=0)


def test_grey_palette_and_cmyk_modes(tmp_path):
    grey = np.arange(0, 250, 10, dtype=np.uint8).reshape(5, 5)
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    loaded = load_image(tmp_path / "grey.png")
    assert loaded.shape == (3, 5, 5)
    torch.testing.assert_close(loaded[1], torch.from_numpy(grey / 127.5 - 1).float())

    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[:2] = (200, 30, 60)
    rgb[2:] = (10, 220, 90)
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(tmp_path / "palette.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    expected = torch.from_numpy(rgb / 127.5 - 1).float().permute(2, 0, 1)
    torch.testing.assert_close(load_image(tmp_path / "palette.png"), expected)
    assert (load_image(tmp_path / "cmyk.jpg") - expected).abs().max() < 0.1
    # RGB -> grey uses ITU-R 601 luma
    luma = load_image(tmp_path / "palette.png", channels=1)
    assert luma.shape == (1, 4, 4)
    torch.testing.assert_close(
        (luma[0, 0, 0] + 1) * 127.5, torch.tensor(0.299 * 200 + 0.587 * 30 + 0.114 * 60)
    )


def test_truncated_and_garbage_files_raise_naming_the_path(tmp_path):
    save_image(_random_image(3, 64, 64), tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.jpg").write_bytes(b"this is not an image")
    for name in ("cut.png", "text.jpg"):
        path = tmp_path / name
        with pytest.raises(UnreadableImageError, match=name) as info:
            load_image(path)
        assert isinstance(info.value, OSError) and info.value.path == str(path)
        with pytest.raises(UnreadableImageError, match=name):
            verify_image(path)
    verify_image(tmp_path / "whole.png")
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")
    error = pickle.loads(pickle.dumps(UnreadableImageError("a.png", "broken")))
    assert str(error) == "cannot read image a.png: broken"


@pytest.mark.parametrize("depth", [8, 16])
def test_broken_zlib_stream_behind_valid_crcs_fails_verify(tmp_path, depth):
    """Every chunk's CRC checks out, so only decompressing the pixels finds the damage."""
    values = np.random.default_rng(0).integers(0, 2**depth, (32, 32, 3)).astype(f"uint{depth}")
    path = tmp_path / "zlib.png"
    path.write_bytes(break_zlib(png_bytes(values)))
    Image.open(path).verify()  # Pillow's chunk-level check passes
    with pytest.raises(UnreadableImageError, match="zlib.png"):
        verify_image(path)
    with pytest.raises(UnreadableImageError, match="zlib.png"):
        load_image(path)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(UnreadableImageError, match="empty.png"):
        verify_image(tmp_path / "empty.png")


def test_truncated_jpeg_is_caught_by_verify(tmp_path):
    array = (np.random.default_rng(0).random((64, 80, 3)) * 255).astype(np.uint8)
    Image.fromarray(array).save(tmp_path / "photo.jpg")
    data = (tmp_path / "photo.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    verify_image(tmp_path / "photo.jpg")
    with pytest.raises(UnreadableImageError, match="cut.jpg"):
        verify_image(tmp_path / "cut.jpg")


def test_image_size_reads_the_header_and_honours_exif_rotation(tmp_path):
    Image.new("RGB", (30, 20)).save(tmp_path / "plain.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    Image.new("RGB", (30, 20)).save(tmp_path / "rotated.jpg", exif=exif)
    assert image_size(tmp_path / "plain.png") == (20, 30)
    assert image_size(tmp_path / "rotated.jpg") == (30, 20)
    assert load_image(tmp_path / "rotated.jpg").shape == (3, 30, 20)


@pytest.mark.parametrize("method", ["area", "bicubic", "lanczos"])
def test_resize_shapes_range_and_antialiasing(method):
    image = _random_image(3, 32, 48)
    same = resize(image, (32, 48), method)
    assert same is image
    small = resize(image, 16, method)
    assert small.shape == (3, 16, 16)
    big = resize(image[None].expand(2, -1, -1, -1), (40, 60), method)
    assert big.shape == (2, 3, 40, 60) and big.min() >= -1 and big.max() <= 1
    # antialiased downsampling averages a checkerboard out; plain sampling would hit single pixels (+-1)
    checker = (torch.arange(63)[:, None] + torch.arange(63)[None, :]) % 2 * 2.0 - 1
    flat = resize(checker.expand(1, -1, -1), 9, method)
    assert flat.abs().max() < 0.1


def test_to_uint8_and_make_grid():
    assert torch.equal(to_uint8(torch.tensor([-1.0, 0.0, 1.0, 3.0])), torch.tensor([0, 128, 255, 255]).byte())
    images = torch.zeros(7, 1, 5, 6)
    grid = make_grid(images, nrow=3, padding=1, pad_value=0.5)
    assert grid.shape == (1, 3 * 6 + 1, 3 * 7 + 1)
    assert grid[0, 0, 0] == 0.5 and grid[0, 1, 1] == 0.0
    assert grid[0, -3, -3] == 0.5  # the two empty slots of the last row are padding
    assert make_grid(images).shape == (1, 3 * 7 + 2, 3 * 8 + 2)  # ceil(sqrt(7)) = 3 per row
    assert make_grid(images, nrow=10, padding=0).shape == (1, 5, 42)
