"""NIfTI volumes read with a bound: a header checked before nibabel sees the file, a volume in one orientation.

Every volume is turned to the closest canonical orientation of its affine (RAS+: axis 0 runs to the
patient's right, axis 1 to anterior, axis 2 to superior; ``nibabel.as_closest_canonical``), so that
slicing along an axis means the same thing for every file whatever order its voxels were stored in.

Why a check of our own before nibabel: nibabel allocates what a header claims. An extension header's
size is read with one ``read(esize - 8)`` (a negative size reads the whole, possibly decompressed,
file), and the data with one read of the product of the dimensions. Here the dimensions, the data type
and the extension chain are checked from at most ``MAX_HEADER_BYTES`` of the file first; a volume over
``MAX_VOXELS`` is refused, not allocated.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.data.gitract import DataError
from core.errors import MissingDependency

NIFTI_ENDINGS = (".nii.gz", ".nii")
# 2^28 voxels: every volume of the Medical Segmentation Decathlon (the largest CT is 512 x 512 x 987)
# fits; a header claiming more is refused before anything is read.
MAX_VOXELS = 1 << 28
# The header and its extensions (real files: 352 bytes and a few KB of extensions at most).
MAX_HEADER_BYTES = 1 << 20
_SIZES = {348: (0, 40, "h", 108, "f", 352), 540: (0, 16, "q", 168, "q", 544)}  # NIfTI-1, NIfTI-2 layouts


@dataclass(frozen=True)
class VolumeHeader:
    """What a NIfTI file's header says, in canonical (RAS+) axis order; no voxel read."""

    path: Path
    shape: tuple[int, int, int]  # voxels along the canonical axes
    zooms: tuple[float, float, float]  # voxel size in mm along the canonical axes (the header's pixdim)
    channels: int  # the fourth dimension (1 for a 3-D volume)


def _nibabel():
    """nibabel, or a ``MissingDependency`` that says how to install it (it is an optional extra)."""
    try:
        import nibabel
    except ImportError:
        raise MissingDependency("reading NIfTI volumes needs nibabel: pip install 'segadv[mri]'") from None
    return nibabel


def read_header(path: str | Path) -> VolumeHeader:
    """The header of ``path`` (``.nii`` or ``.nii.gz``), checked; a ``DataError`` naming the file otherwise."""
    nib = _nibabel()

    path = Path(path)
    header = _checked_header(path, _head_bytes(path))
    shape = header.get_data_shape()
    try:
        ornt = nib.orientations.io_orientation(header.get_best_affine())
    except (ValueError, np.linalg.LinAlgError) as exc:
        raise DataError(f"{path}: its affine gives no orientation ({one_line(exc)})") from None
    if np.isnan(ornt).any():  # an axis the affine does not map anywhere
        raise DataError(f"{path}: its affine maps a voxel axis to no direction")
    axes = [int(axis) for axis in ornt[:, 0]]
    zooms = [float(zoom) for zoom in header.get_zooms()[:3]]
    if not all(np.isfinite(zoom) and zoom > 0 for zoom in zooms):
        raise DataError(f"{path}: its header gives a voxel size of {' x '.join(f'{z:g}' for z in zooms)} mm")
    canonical_shape, canonical_zooms = [0, 0, 0], [0.0, 0.0, 0.0]
    for stored, canonical in enumerate(axes):
        canonical_shape[canonical], canonical_zooms[canonical] = int(shape[stored]), zooms[stored]
    channels = int(shape[3]) if len(shape) == 4 else 1
    return VolumeHeader(path, tuple(canonical_shape), tuple(canonical_zooms), channels)  # type: ignore[arg-type]


def read_volume(path: str | Path) -> np.ndarray:
    """The voxels of ``path`` in canonical (RAS+) order, as stored (scaled by the header's slope and
    intercept where it has them); the first channel of a 4-D file. ``DataError`` naming the file for a
    header or data that cannot be read."""
    nib = _nibabel()
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    path = Path(path)
    header = _checked_header(path, _head_bytes(path))
    try:
        image = nib.load(path, mmap=False)  # no memory map: a file cut short later must not kill the process
        if len(header.get_data_shape()) == 4:
            image = image.slicer[:, :, :, 0]  # reads the first channel only
        volume = np.asanyarray(nib.as_closest_canonical(image).dataobj)
    except DataError:
        raise
    except (
        OSError,
        EOFError,
        ValueError,
        zlib.error,
        ImageFileError,
        HeaderDataError,
    ) as exc:
        raise DataError(f"cannot read {path}: {one_line(exc)}") from None
    if volume.dtype.kind not in "biuf":
        raise DataError(f"{path}: voxels of type {volume.dtype} are not numbers segadv reads")
    return volume


def _head_bytes(path: Path) -> bytes:
    """The header and its extensions as stored (decompressed for ``.nii.gz``), at most ``MAX_HEADER_BYTES``."""
    if not path.name.endswith(NIFTI_ENDINGS):
        raise DataError(f"{path}: not a NIfTI file name (expected {' or '.join(NIFTI_ENDINGS)})")
    try:
        with open(path, "rb") as raw:
            stream = gzip.GzipFile(fileobj=raw) if path.name.endswith(".gz") else raw
            head = stream.read(544)
            sizeof = _sizeof_hdr(head, path)
            fields = _SIZES[sizeof]
            vox_offset = _vox_offset(head, sizeof, path)
            if len(head) >= fields[5] and head[sizeof : sizeof + 1] != b"\x00" and vox_offset > len(head):
                head += stream.read(vox_offset - len(head))  # the extensions, up to the data
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    except DataError:
        raise
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {path}: {one_line(exc)}") from None
    return head


def _sizeof_hdr(head: bytes, path: Path) -> int:
    if len(head) >= 4:
        for order in "<>":
            (sizeof,) = struct.unpack(order + "i", head[:4])
            if sizeof in _SIZES and len(head) >= sizeof:
                return sizeof
    raise DataError(f"{path}: not a NIfTI file (no NIfTI-1 or NIfTI-2 header)")


def _byte_order(head: bytes) -> str:
    return "<" if struct.unpack("<i", head[:4])[0] in _SIZES else ">"


def _vox_offset(head: bytes, sizeof: int, path: Path) -> int:
    order = _byte_order(head)
    _, _, _, at, kind, _ = _SIZES[sizeof]
    (value,) = struct.unpack(order + kind, head[at : at + struct.calcsize(kind)])
    if not (np.isfinite(value) and 0 <= value <= MAX_HEADER_BYTES):
        raise DataError(
            f"{path}: its header puts the voxels at byte {value:g}; segadv reads headers of at most {MAX_HEADER_BYTES}"
        )
    return int(value)


def _checked_header(path: Path, head: bytes):
    """nibabel's header of ``head``, after our checks of what nibabel would allocate for."""
    nib = _nibabel()
    from nibabel.spatialimages import HeaderDataError

    sizeof = _sizeof_hdr(head, path)
    klass = nib.Nifti1Header if sizeof == 348 else nib.Nifti2Header
    try:
        header = klass(head[:sizeof], check=False)
        magic = bytes(header["magic"])
        dtype = header.get_data_dtype()
        shape = header.get_data_shape()
    except (ValueError, KeyError, HeaderDataError) as exc:
        raise DataError(f"{path}: not a NIfTI file we can read ({one_line(exc)})") from None
    if magic[:3] != klass.single_magic:
        raise DataError(f"{path}: not a single-file NIfTI image (magic {magic!r})")
    if len(shape) not in (3, 4) or any(size < 1 for size in shape):
        raise DataError(f"{path}: a volume of {_dims(shape)} voxels; segadv reads 3-D volumes (or 4-D, channels last)")
    voxels = int(np.prod(np.asarray(shape, dtype=object)))
    if voxels > MAX_VOXELS:
        raise DataError(f"{path}: its header says {_dims(shape)} voxels; segadv reads volumes of at most {MAX_VOXELS}")
    if dtype.kind not in "biuf" or dtype.fields is not None:
        raise DataError(f"{path}: voxels of type {dtype} are not numbers segadv reads")
    _check_extensions(head, sizeof, path)
    return header


def _check_extensions(head: bytes, sizeof: int, path: Path) -> None:
    """Walk the extension chain as nibabel will, so that none of its reads goes past the voxel offset."""
    start = _SIZES[sizeof][5]
    if len(head) < start or head[sizeof : sizeof + 1] == b"\x00":
        return
    order = _byte_order(head)
    at, end = start, _vox_offset(head, sizeof, path)
    if end < start:  # nibabel would read extensions to the end of the file
        raise DataError(f"{path}: its header has extensions but puts the voxels at byte {end}, inside the header")
    while end - at >= 16:
        if at + 8 > len(head):
            raise DataError(f"{path}: its header extensions are cut short")
        (size,) = struct.unpack(order + "i", head[at : at + 4])
        if not 8 <= size <= end - at:
            raise DataError(f"{path}: a header extension of {size} bytes where {end - at} remain before the voxels")
        at += size


def one_line(exc: BaseException) -> str:
    """A library's message as one line, at most 300 characters (nibabel's span several)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:300] + "..."


def _dims(shape) -> str:
    return " x ".join(str(size) for size in shape)
