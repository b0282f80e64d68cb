"""Reading and writing videos, animated images, frame folders and images.

Layouts
-------
Everything this module returns uses one layout so callers never guess:

* a clip is a numpy array ``(F, H, W, 3) uint8`` in RGB order, F frames;
* an image is a numpy array ``(H, W, 3) uint8`` in RGB order.

:func:`write_video` is more lenient on input (see :func:`to_uint8_frames`):
``(F, H, W, 3)`` uint8 or float in [0, 1] numpy arrays, torch tensors
``(F, 3, H, W)`` or ``(F, H, W, 3)`` (float in [0, 1] or uint8), or a list of
PIL images.

Media kinds
-----------
* Videos (``.mp4``, ``.mov``, ``.mkv``, ...): read with decord when it is
  installed, falling back to PyAV; written with PyAV (libx264, yuv420p).
* Animated ``.gif`` / ``.webp`` (and single images as one-frame clips): Pillow.
* Frame folders: a directory of ``.png`` / ``.jpg`` files, one per frame,
  ordered by name (numbers compared as numbers). Folders carry no timing, so
  their frame rate is :data:`DEFAULT_FOLDER_FPS` unless the caller states it.

Writes are atomic: the output is produced under a temporary name in the
destination folder and renamed into place only once complete, so a crash or
error never leaves a half-written file behind.
"""

from vidldm.io.media import MediaError
from vidldm.io.read import DEFAULT_FOLDER_FPS, probe_video, read_image, read_video
from vidldm.io.write import (
    OUTPUT_SUFFIXES,
    check_output_folder,
    check_output_path,
    to_uint8_frames,
    write_clip,
    write_grid,
    write_video,
)

__all__ = [
    "DEFAULT_FOLDER_FPS",
    "OUTPUT_SUFFIXES",
    "MediaError",
    "check_output_folder",
    "check_output_path",
    "probe_video",
    "read_image",
    "read_video",
    "to_uint8_frames",
    "write_clip",
    "write_grid",
    "write_video",
]
