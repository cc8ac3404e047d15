"""Image handling for attachments: sniff a media type from content, and convert images to WebP.

Pure functions over bytes, run in worker processes (Pillow holds the GIL while it decodes). Only
the formats below are ever opened, so a crafted file cannot reach Pillow's riskier plugins (EPS
runs Ghostscript). Knows nothing of paths, storage or messages; the only module that
imports Pillow.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

# The deferred converter's niceness: other agents' sends (the daemon at nice 0) always go first.
DEFERRED_NICENESS = 19
_PR_SET_PDEATHSIG = 1

CONVERTIBLE = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")

# (magic prefix, offset, media type, extension), checked in order.
_MAGIC: tuple[tuple[bytes, int, str, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png", "png"),
    (b"\xff\xd8\xff", 0, "image/jpeg", "jpg"),
    (b"GIF87a", 0, "image/gif", "gif"),
    (b"GIF89a", 0, "image/gif", "gif"),
    (b"WEBP", 8, "image/webp", "webp"),  # after b"RIFF" + size
    (b"BM", 0, "image/bmp", "bmp"),
    (b"II*\x00", 0, "image/tiff", "tiff"),
    (b"MM\x00*", 0, "image/tiff", "tiff"),
    (b"%PDF-", 0, "application/pdf", "pdf"),
    (b"PK\x03\x04", 0, "application/zip", "zip"),
    (b"\x1f\x8b", 0, "application/gzip", "gz"),
)


class ImageRefused(ValueError):
    """The bytes claim to be an image Pillow cannot safely decode (corrupt, truncated, a bomb)."""


@dataclass(frozen=True)
class Converted:
    data: bytes
    width: int
    height: int


def sniff(data: bytes) -> tuple[str, str]:
    """(media type, extension) from the content itself; the file name is never trusted."""
    for magic, offset, media_type, ext in _MAGIC:
        if data[offset : offset + len(magic)] == magic and (offset == 0 or data[:4] == b"RIFF"):
            return media_type, ext
    head = data[:8192]
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.start < len(head) - 4:  # a multi-byte character cut at 8 KiB is still text
                return "application/octet-stream", "bin"
        return "text/plain", "txt"
    return "application/octet-stream", "bin"


def is_image(media_type: str) -> bool:
    return media_type in ("image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/tiff")


def _pillow() -> ModuleType:
    """PIL.Image, imported at the first image (not at the daemon's start: ~15 ms nobody sending text needs)."""
    from PIL import Image

    # Pillow warns (DecompressionBombWarning) between MAX_IMAGE_PIXELS and twice that, and raises
    # beyond: an attachment is refused at the warning already. Set at every use (it replaces itself),
    # so a caller's catch_warnings() cannot have dropped it.
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    return Image


def _open(data: bytes) -> Image.Image:
    pil = _pillow()
    try:
        opened = pil.open(io.BytesIO(data), formats=CONVERTIBLE)
    except (pil.DecompressionBombError, pil.DecompressionBombWarning) as exc:
        raise ImageRefused(f"it is too large to decode safely ({exc})") from None
    except (pil.UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageRefused(f"it is not a readable image ({exc})") from None
    image: Image.Image = opened
    return image


def probe(data: bytes) -> tuple[int, int]:
    """Width and height of an image stored as it is (header only; refuses bombs)."""
    with _open(data) as image:
        return image.size


def verify(data: bytes) -> tuple[int, int]:
    """Decode the image fully (first frame), as a conversion would, and return the size it will have
    once its EXIF orientation is applied. What a deferred conversion checks before the send answers:
    a bomb, a corrupt or a truncated file is refused here, so the later encode only fails on limits
    of the encoder itself. Pillow's decoders release the GIL, so a thread suffices (≈ 36 ms, 2 MP PNG)."""
    pil = _pillow()
    with _open(data) as image:
        try:
            image.seek(0)
            image.load()
            orientation = image.getexif().get(0x0112, 1)
        except (pil.DecompressionBombError, pil.DecompressionBombWarning) as exc:
            raise ImageRefused(f"it is too large to decode safely ({exc})") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageRefused(f"it is corrupt or truncated ({exc})") from None
        width, height = image.size
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def to_webp(data: bytes, *, method: int, quality: int) -> Converted:
    """Decode fully (first frame of an animation), apply the EXIF orientation, drop all metadata
    (EXIF, GPS, XMP, ICC comments), keep alpha, encode WebP. Refuses corrupt or oversized input."""
    pil = _pillow()
    with _open(data) as image:
        try:
            image.seek(0)
            image.load()
            from PIL import ImageOps

            oriented = ImageOps.exif_transpose(image)
            has_alpha = oriented.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
                oriented.mode == "P" and "transparency" in oriented.info
            )
            pixels = oriented.convert("RGBA" if has_alpha else "RGB")
        except (pil.DecompressionBombError, pil.DecompressionBombWarning) as exc:
            raise ImageRefused(f"it is too large to decode safely ({exc})") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageRefused(f"it is corrupt or truncated ({exc})") from None
    pixels.info.clear()  # convert() copies info (exif, xmp, icc): none of it may reach the output
    out = io.BytesIO()
    pixels.save(out, format="WEBP", method=method, quality=quality, exif=b"", xmp=b"")
    return Converted(out.getvalue(), pixels.width, pixels.height)


_started = False


def verify_file_in_worker(path: str) -> tuple[int, int]:
    """`verify` of a file's bytes in one of anyio's worker processes (to_process): Pillow holds the
    GIL while it decodes (≈ 36 ms in one piece for a 2 MB PNG here), which would stall the daemon's
    loop and so every other agent's send. These workers run at normal priority: the send waits."""
    _once_per_process()
    return verify(Path(path).read_bytes())


def to_webp_in_worker(data: bytes, method: int, quality: int) -> Converted:
    """`to_webp` in one of anyio's worker processes (a small image, converted during the send)."""
    _once_per_process()
    return to_webp(data, method=method, quality=quality)


def lower_priority() -> None:
    """Initializer of the deferred converter's process: a deferred conversion has no one waiting on
    it, so it only runs on CPU time nobody else wants. Linux: SCHED_IDLE — a CPU running only such a
    task counts as idle, so the daemon's threads wake up on it and preempt it at once. Measured here:
    at nice 19 alone, other agents' text sends still took 3x longer (p50) while a conversion ran.
    Elsewhere (and as well) nice 19."""
    os.nice(DEFERRED_NICENESS)
    idle = getattr(os, "SCHED_IDLE", None)
    if idle is not None:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, idle, os.sched_param(0))
    _once_per_process()


def _once_per_process() -> None:
    global _started  # noqa: PLW0603 - once per worker process
    if not _started:
        _started = True
        _die_with_parent()


def _die_with_parent() -> None:
    """Linux: a daemon killed mid-conversion takes its converter with it (the restarted daemon redoes
    the conversion; an orphan would only burn a core for a result nobody can store)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes  # only in worker processes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the call: nobody will signal us
        os._exit(0)
