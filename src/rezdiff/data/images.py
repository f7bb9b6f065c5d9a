"""Image I/O and resizing on plain tensors, without torchvision.

Images are float tensors in ``[-1, 1]``, channels first, grey (``C = 1``) or RGB (``C = 3``). Reading goes
through Pillow; everything a file can hold (palette, alpha, 16-bit, CMYK, EXIF rotation) ends up in that one
form, and a file that cannot be decoded raises :class:`UnreadableImageError` naming its path. Pillow reads
16-bit colour PNGs (48-bit RGB, 64-bit RGBA, 32-bit grey+alpha) as 8 bits per channel; :func:`_read_png16`
reads them at full precision instead.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor

from rezdiff.data.coords import Resolution, as_hw

Channels = Literal[1, 3]
ResizeMethod = Literal["area", "bicubic", "lanczos"]

# ITU-R BT.601 luma, the weights Pillow uses for RGB -> L.
_LUMA = (0.299, 0.587, 0.114)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


class UnreadableImageError(OSError):
    """An image file that exists but cannot be decoded (corrupt, truncated, not an image)."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Keeps the exception picklable (DataLoader workers, multiprocessing) despite the 2-argument init.
        return (type(self), (self.path, self.reason))


def _check_channels(channels: int) -> None:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")


def from_array(array: np.ndarray, channels: Channels = 3) -> Tensor:
    """A numpy image -> ``[C, H, W]`` float32 in ``[-1, 1]``.

    Accepts ``[H, W]`` or ``[H, W, 1 | 2 | 3 | 4]`` (grey, grey+alpha, RGB, RGBA; alpha is composited over
    white), of dtype bool, uint8, uint16 (full 16-bit range) or float in ``[0, 1]``. Grey is replicated to
    three channels and RGB reduced to luma as ``channels`` asks.
    """
    _check_channels(channels)
    if array.dtype == np.bool_:
        values = array.astype(np.float32)
    elif array.dtype == np.uint8:
        values = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        values = array.astype(np.float32) / 65535.0
    elif np.issubdtype(array.dtype, np.floating):
        values = np.clip(array.astype(np.float32), 0.0, 1.0)
    else:
        raise ValueError(f"unsupported image dtype {array.dtype}; expected bool, uint8, uint16 or float")
    if values.ndim == 2:
        values = values[:, :, None]
    if values.ndim != 3 or values.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected an image of shape [H, W] or [H, W, 1-4], got {array.shape}")
    if values.shape[2] in (2, 4):  # composite over white
        colour, alpha = values[:, :, :-1], values[:, :, -1:]
        values = colour * alpha + (1.0 - alpha)
    image = torch.from_numpy(np.ascontiguousarray(values)).permute(2, 0, 1)
    if image.shape[0] == 1 and channels == 3:
        image = image.expand(3, -1, -1)
    elif image.shape[0] == 3 and channels == 1:
        weights = torch.tensor(_LUMA, dtype=image.dtype).view(3, 1, 1)
        image = (image * weights).sum(0, keepdim=True)
    return (image * 2.0 - 1.0).contiguous()


def _pil_to_array(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> a numpy array that :func:`from_array` understands."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        # 16-bit grey (PNG opens as I;16, some readers as I); values beyond 16 bits are clipped.
        return np.clip(np.asarray(image, dtype=np.int64), 0, 65535).astype(np.uint16)
    if mode == "F":
        return np.asarray(image, dtype=np.float32)
    if mode == "1":
        return np.asarray(image.convert("L"))
    grey = mode in ("L", "LA", "La")
    if mode in _ALPHA_MODES or "transparency" in image.info:
        return np.asarray(image.convert("LA" if grey else "RGBA"))
    return np.asarray(image if mode in ("L", "RGB") else image.convert("RGB"))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour types Pillow reduces to 8 bits at bit depth 16: number of samples per pixel and the mode of an
# 8-bit image with the same layout (grey, type 0, Pillow reads at 16 bits as I;16).
_PNG16_LAYOUTS = {2: (3, "RGB"), 4: (2, "LA"), 6: (4, "RGBA")}
# Adam7 passes: (first column, first row, column step, row step).
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
# EXIF orientation -> the transpose that shows the image upright (the TIFF/EXIF specification's table).
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """``(type, payload)`` of every chunk of a PNG file up to IEND, checking lengths and CRCs."""
    chunks: list[tuple[bytes, bytes]] = []
    position = len(_PNG_SIGNATURE)
    while True:
        if position + 8 > len(data):
            raise ValueError("truncated PNG: no IEND chunk")
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        end = position + 8 + length
        if end + 4 > len(data):
            raise ValueError(f"truncated PNG: {kind!r} chunk cut short")
        payload = data[position + 8 : end]
        (crc,) = struct.unpack(">I", data[end : end + 4])
        if zlib.crc32(kind + payload) != crc:
            raise ValueError(f"broken PNG: CRC mismatch in {kind!r} chunk")
        chunks.append((kind, payload))
        if kind == b"IEND":
            return chunks
        position = end + 4


def _read_png16(path: str | os.PathLike[str]) -> np.ndarray | None:
    """A 16-bit colour PNG as ``uint16 [H, W, C]`` at full precision; ``None`` for any other file.

    PNG's row filters act on each byte with the same byte of the pixel to the left and of the row above, so
    the high bytes of all samples form a valid filtered 8-bit image of the same size and layout, and so do
    the low bytes. Both are repacked as 8-bit PNGs, decoded by Pillow (filters, interlacing) and joined.
    A ``tRNS`` colour key becomes an alpha channel; EXIF orientation is applied as :func:`load_image` does.
    """
    with open(path, "rb") as file:
        head = file.read(29)  # signature, IHDR length and type, its 13 bytes
        if not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR" or len(head) < 29:
            return None
        width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", head[16:29])
        if depth != 16 or colour not in _PNG16_LAYOUTS:
            return None
        data = head + file.read()
    samples, mode = _PNG16_LAYOUTS[colour]
    chunks = _png_chunks(data)
    raw = zlib.decompress(b"".join(payload for kind, payload in chunks if kind == b"IDAT"))
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    high: list[bytes] = []
    low: list[bytes] = []
    offset = 0
    for x0, y0, dx, dy in passes:
        pass_w, pass_h = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if pass_w <= 0 or pass_h <= 0:
            continue
        size = pass_h * (1 + 2 * samples * pass_w)
        if offset + size > len(raw):
            raise ValueError("truncated PNG: image data ends early")
        rows = np.frombuffer(raw, np.uint8, size, offset).reshape(pass_h, -1)
        offset += size
        planes = rows[:, 1:].reshape(pass_h, pass_w * samples, 2)
        high.append(np.concatenate([rows[:, :1], planes[:, :, 0]], axis=1).tobytes())
        low.append(np.concatenate([rows[:, :1], planes[:, :, 1]], axis=1).tobytes())
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, interlace)
    exif = Image.Exif()
    for kind, payload in chunks:
        if kind == b"eXIf":
            exif.load(payload)
    orientation = exif.get(0x0112, 1)  # EXIF Orientation
    halves = []
    for filtered in (high, low):
        png = _PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"".join(filtered), 0))
        with Image.open(io.BytesIO(png + _chunk(b"IEND", b""))) as image:
            if image.mode != mode:
                raise ValueError(f"unexpected mode {image.mode} for a repacked {mode} PNG")
            if orientation in _EXIF_TRANSPOSE:
                image = image.transpose(_EXIF_TRANSPOSE[orientation])
            halves.append(np.asarray(image, dtype=np.uint16).reshape(image.height, image.width, samples))
    array = (halves[0] << 8) | halves[1]
    key = next((payload for kind, payload in chunks if kind == b"tRNS"), None)
    if colour == 2 and key is not None and len(key) == 6:
        opaque = (array != np.frombuffer(key, ">u2").astype(np.uint16)).any(axis=2, keepdims=True)
        array = np.concatenate([array, opaque.astype(np.uint16) * 65535], axis=2)
    return array


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def decode_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file completely -> a numpy array that :func:`from_array` understands.

    Every pixel is decompressed (a broken zlib stream behind valid CRCs fails here) and EXIF orientation
    applied. Raises :class:`UnreadableImageError` naming the path, ``FileNotFoundError`` if absent.
    """
    try:
        deep = _read_png16(path)
        if deep is not None:
            return deep
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            return _pil_to_array(image)
    except FileNotFoundError:
        raise
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, zlib.error...
        raise UnreadableImageError(path, f"{type(error).__name__}: {error}") from error


def load_image(path: str | os.PathLike[str], channels: Channels = 3) -> Tensor:
    """Read an image file -> ``[C, H, W]`` float32 in ``[-1, 1]``.

    Handles grey, palette, RGBA (composited over white), 16-bit PNG of every colour type (scaled by 65535),
    CMYK and EXIF orientation; multi-frame files give their first frame. Raises
    :class:`UnreadableImageError` (an ``OSError``) naming the path for a corrupt, truncated or non-image
    file, ``FileNotFoundError`` if absent.
    """
    _check_channels(channels)
    return from_array(decode_image(path), channels)


def verify_image(path: str | os.PathLike[str]) -> None:
    """Check that a file decodes completely (as :func:`load_image` would read it), raising
    :class:`UnreadableImageError` naming it if not."""
    decode_image(path)


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(H, W)`` of an image file as :func:`load_image` returns it, read from the header only."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)  # EXIF Orientation
    except FileNotFoundError:
        raise
    except Exception as error:
        raise UnreadableImageError(path, f"{type(error).__name__}: {error}") from error
    if orientation in (5, 6, 7, 8):  # transposed or rotated by 90 degrees
        width, height = height, width
    return height, width


def resize(image: Tensor, size: Resolution, method: ResizeMethod = "bicubic") -> Tensor:
    """Resize ``[C, H, W]`` or ``[B, C, H, W]`` images in ``[-1, 1]`` to ``size`` (int or ``(H, W)``).

    Downsampling is antialiased for every method: ``bicubic`` uses ``F.interpolate(antialias=True)``,
    ``area`` averages over each output cell, ``lanczos`` goes through Pillow per channel in float mode.
    Bicubic and Lanczos overshoot at edges, so their output is clamped back to ``[-1, 1]``. An image already
    at ``size`` is returned unchanged (the same tensor).
    """
    height, width = as_hw(size)
    if image.dim() not in (3, 4):
        raise ValueError(f"resize expects [C, H, W] or [B, C, H, W], got shape {tuple(image.shape)}")
    if tuple(image.shape[-2:]) == (height, width):
        return image
    batch = image if image.dim() == 4 else image.unsqueeze(0)
    if method == "bicubic":
        out = F.interpolate(batch, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
        out = out.clamp(-1.0, 1.0)
    elif method == "area":
        out = F.interpolate(batch, size=(height, width), mode="area")
    elif method == "lanczos":
        out = _resize_lanczos(batch, height, width)
    else:
        raise ValueError(f"unknown resize method {method!r}; choose 'area', 'bicubic' or 'lanczos'")
    return out if image.dim() == 4 else out.squeeze(0)


def _resize_lanczos(batch: Tensor, height: int, width: int) -> Tensor:
    planes = batch.detach().to("cpu", torch.float32).reshape(-1, *batch.shape[-2:]).numpy()
    resized = [
        np.asarray(Image.fromarray(plane).resize((width, height), Image.Resampling.LANCZOS))
        for plane in planes
    ]
    out = torch.from_numpy(np.stack(resized)).view(*batch.shape[:2], height, width)
    return out.clamp_(-1.0, 1.0).to(device=batch.device, dtype=batch.dtype)


def to_uint8(images: Tensor) -> Tensor:
    """``[-1, 1]`` floats -> ``uint8`` in ``[0, 255]`` (rounded, clamped), same shape."""
    return ((images.detach().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


def make_grid(images: Tensor, nrow: int | None = None, padding: int = 2, pad_value: float = 1.0) -> Tensor:
    """Tile ``[B, C, H, W]`` images into one ``[C, H', W']`` image, ``nrow`` images per row.

    ``nrow`` defaults to ``ceil(sqrt(B))`` (a near-square grid); ``pad_value`` is in the ``[-1, 1]`` data
    range (1 = white).
    """
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"make_grid expects a non-empty [B, C, H, W] tensor, got {tuple(images.shape)}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    count, channels, height, width = images.shape
    columns = min(count, nrow if nrow is not None else math.ceil(math.sqrt(count)))
    if columns < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    rows = math.ceil(count / columns)
    step_y, step_x = height + padding, width + padding
    grid = images.new_full((channels, rows * step_y + padding, columns * step_x + padding), pad_value)
    for k in range(count):
        top = padding + (k // columns) * step_y
        left = padding + (k % columns) * step_x
        grid[:, top : top + height, left : left + width] = images[k]
    return grid


def save_image(tensor: Tensor, path: str | os.PathLike[str]) -> None:
    """Write ``[C, H, W]`` or ``[B, C, H, W]`` (tiled with :func:`make_grid`) in ``[-1, 1]`` to an image file.

    One channel is written as grey, three as RGB. The format follows the suffix (PNG when there is none);
    parent folders are created.
    """
    if tensor.dim() == 4:
        tensor = tensor[0] if tensor.shape[0] == 1 else make_grid(tensor)
    if tensor.dim() != 3 or tensor.shape[0] not in (1, 3):
        raise ValueError(f"save_image expects [1|3, H, W] or [B, 1|3, H, W], got {tuple(tensor.shape)}")
    array = to_uint8(tensor).cpu().permute(1, 2, 0).numpy()
    image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target, format=None if target.suffix else "PNG")


ResizeBoundary = Literal["periodic", "reflect"]


def _fourier_last(x: Tensor, size: int) -> Tensor:
    """Band-limited resampling of the last dim from ``n`` to ``size`` pixel-centre samples of ``[0, 1)``.

    Keeps the wave numbers ``|k| < min(n, size) / 2`` (a Nyquist mode is dropped: its cosine vanishes at
    the pixel centres, so it has no consistent value) and moves their phase from the ``n``-point pixel
    centres ``(i + 1/2) / n`` to the ``size``-point ones, so a function that is band-limited below both
    Nyquist frequencies gets exactly its values on the new grid.
    """
    n = x.shape[-1]
    if n == size:
        return x
    k = torch.fft.fftfreq(n, d=1.0 / n, device=x.device, dtype=torch.float64).round().long()
    kept = k[2 * k.abs() < min(n, size)]
    coeffs = torch.fft.fft(x, dim=-1, norm="forward")[..., kept % n]
    angle = math.pi * (1 / size - 1 / n) * kept.to(torch.float64)
    shift = torch.polar(torch.ones_like(angle), angle)
    out = coeffs.new_zeros(*x.shape[:-1], size)
    out[..., kept % size] = coeffs * shift.to(coeffs.dtype)
    return torch.fft.ifft(out, dim=-1, norm="forward").real


def fourier_resize(image: Tensor, size: Resolution, boundary: ResizeBoundary = "periodic") -> Tensor:
    """Resize ``[..., H, W]`` grids of function values by truncating or zero-padding their spectrum.

    The multilevel family's "Fourier downsampling": grids hold the values of a function on the unit square
    at the pixel centres, and the result holds the values of its band-limited projection on the new grid
    (downsampling is the ideal low-pass filter, upsampling the band-limited interpolation; one undoes the
    other on the coarse band). ``"periodic"`` uses the Fourier basis of the periodic square (the paper's
    choice, matching the periodic priors and the FNO; non-periodic images ring at the borders);
    ``"reflect"`` uses the cosine basis (the DCT-II: the periodic resampling of the mirrored image),
    which does not ring at the borders. Values are not clamped. Runs in float32 (float64 for float64
    input) with autocast off and returns ``image``'s dtype; an image already at ``size`` is returned as is.
    """
    height, width = as_hw(size)
    if image.dim() < 2:
        raise ValueError(f"fourier_resize expects [..., H, W], got shape {tuple(image.shape)}")
    if boundary not in ("periodic", "reflect"):
        raise ValueError(f"unknown boundary {boundary!r}; choose 'periodic' or 'reflect'")
    if tuple(image.shape[-2:]) == (height, width):
        return image
    dtype = torch.float64 if image.dtype == torch.float64 else torch.float32
    device = image.device.type
    autocast = torch.autocast(device, enabled=False) if torch.amp.is_autocast_available(device) else None
    with autocast or contextlib.nullcontext():
        x = image.to(dtype)
        for axis_size in (width, height):  # last dim, then (after a transpose) the rows
            if boundary == "reflect":
                mirrored = torch.cat([x, x.flip(-1)], dim=-1)
                x = _fourier_last(mirrored, 2 * axis_size)[..., :axis_size]
            else:
                x = _fourier_last(x, axis_size)
            x = x.transpose(-1, -2)
    return x.to(image.dtype)
