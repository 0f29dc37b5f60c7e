"""A small real-MRI data set in the Decathlon / nnU-Net layout, made from the MNI ICBM152 template nilearn ships.

nilearn's wheel holds the ICBM 2009a nonlinear symmetric template at 1 mm
(``nilearn/datasets/data/mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz``): a skull-stripped
T1 volume (zero outside the brain), the average of 152 adults' scans, and its grey- and white-matter
probability maps. Nothing is downloaded.

The labels (an integer label map, nnU-Net v2 ``dataset.json``):

- 1 grey matter, 2 white matter: where that tissue's probability is the largest of grey matter, white
  matter and the rest (1 - grey - white) and at least 0.5 ("more likely than not");
- 3 other brain: the rest of the brain (cerebrospinal fluid, and partial-volume voxels no tissue wins);
- 0 background: outside the brain, the T1 volume's zero (the brain mask, at half after resampling).

On the template at 2.5 mm that is about 58 % grey matter, 32 % white matter and 10 % other brain.

The cases, each made from the one template by a transform drawn from the seed (recorded per case in
``dataset.json``'s ``segadv.cases``):

- a rotation of up to 10 degrees about the superior axis and 6 about the two others, a scale of 0.92 to
  1.08 and a shift of up to 4 mm, about the brain's centre; every second case mirrored left to right;
- resampled (trilinear, after a Gaussian of the new voxel's width against aliasing) onto a grid of
  ``voxel_mm`` voxels around the brain, the probability maps first and the labels from them, so the
  cases' label maps differ voxel by voxel;
- the T1 intensities: a gamma of 0.75 to 1.35, a smooth multiplicative bias field of up to 10 % across
  the head, and Rician noise of 1 to 3 % of the brightest tissue (MRI's magnitude noise, non-zero in
  the background too); stored as int16 (0 to about 1000);
- stored in RAS or, every other pair of cases, LPS voxel order (as DICOM converters write), so that the
  reader's reorientation is exercised on real files.

The template's copyright notice travels with every copy: the folder gets ``NOTICE`` and ``dataset.json``
its ``licence`` and ``reference``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.errors import MissingDependency, OptionError
from core.files import write_folder
from core.paths import cache_dir
from core.progress import Progress

VERSION = 1  # part of the cache folder's name: bump when the output changes
TEMPLATE = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
# size -> (cases, voxel size in mm)
SIZES = {"default": (8, 2.5), "tiny": (3, 4.0)}
LABELS = {"background": 0, "Grey matter": 1, "White matter": 2, "Other brain": 3}
MARGIN_MM = 8.0
INSTALL_HINT = "pip install 'segadv[mri]' (nilearn and nibabel)"

COPYRIGHT = (
    "Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute, "
    "McGill University. Permission to use, copy, modify, and distribute this software and its documentation "
    "for any purpose and without fee is hereby granted, provided that the above copyright notice appear in all "
    "copies. The authors and McGill University make no representations about the suitability of this software "
    'for any purpose. It is provided "as is" without express or implied warranty. The authors are not '
    "responsible for any data loss, equipment damage, property loss, or injury to subjects or patients "
    "resulting from the use or misuse of this software package."
)
REFERENCE = (
    "MNI ICBM152 2009a nonlinear symmetric template, http://www.bic.mni.mcgill.ca/ServicesAtlases/ICBM152NLin2009 "
    "(as shipped by nilearn). VS Fonov, AC Evans, K Botteron, CR Almli, RC McKinstry, DL Collins and BDCG, "
    "Unbiased average age-appropriate atlases for pediatric studies, NeuroImage 54(1), 2011, "
    "doi:10.1016/j.neuroimage.2010.07.033. VS Fonov, AC Evans, RC McKinstry, CR Almli and DL Collins, Unbiased "
    "nonlinear average age-appropriate brain templates from birth to adulthood, NeuroImage 47 Supplement 1, "
    "2009, S102, doi:10.1016/S1053-8119(09)70884-5. DL Collins, AP Zijdenbos, WFC Baare and AC Evans, ANIMAL+"
    "INSECT: improved cortical structure segmentation, IPMI 1999."
)


def template_folder() -> Path:
    """The folder of nilearn's installed data that holds the template files (found without importing
    nilearn, which takes seconds: only its files are used)."""
    import importlib.util

    for package in ("nibabel", "nilearn"):
        if importlib.util.find_spec(package) is None:
            raise MissingDependency(f"the MNI152 data needs {package}: {INSTALL_HINT}")
    spec = importlib.util.find_spec("nilearn")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    folder = Path(locations[0] if locations else ".") / "datasets" / "data"
    missing = [TEMPLATE.format(kind) for kind in ("t1", "gm", "wm") if not (folder / TEMPLATE.format(kind)).is_file()]
    if missing:
        raise MissingDependency(f"the installed nilearn ({folder}) lacks {', '.join(missing)}; {INSTALL_HINT}")
    return folder


def write_mni152_dataset(
    out, *, size: str = "default", seed: int = 0, overwrite: bool = False, progress: Progress | None = None
) -> Path:
    """Write the data set (see the module) to ``out`` and return ``out``. Written into a hidden sibling
    folder and renamed into place, so an interrupted run leaves no half data set; an existing non-empty
    ``out`` is refused unless ``overwrite``. ``progress(done, total)`` after each case."""
    if size not in SIZES:
        raise OptionError(f"unknown MNI152 size {size!r}; choose one of {', '.join(SIZES)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise OptionError(f"the MNI152 seed must be a non-negative integer, got {seed!r}")
    folder = template_folder()
    return write_folder(out, lambda root: _write_into(root, folder, size, seed, progress), overwrite=overwrite)


def mni152_data_dir(size: str = "default", seed: int = 0, progress: Progress | None = None) -> Path:
    """The data set in the per-user cache, written on first use and reused afterwards."""
    target = cache_dir() / f"mni152-v{VERSION}-{size}-seed{seed}"
    if not (target / "dataset.json").is_file():
        write_mni152_dataset(target, size=size, seed=seed, overwrite=True, progress=progress)
    return target


def _write_into(root: Path, folder: Path, size: str, seed: int, progress: Progress | None) -> None:
    import nibabel as nib
    from scipy import ndimage

    cases, voxel_mm = SIZES[size]
    t1_image = nib.load(folder / TEMPLATE.format("t1"))
    source_affine = t1_image.affine
    t1 = np.asarray(t1_image.dataobj, dtype=np.float32) / 255.0
    gm, wm = (np.asarray(nib.load(folder / TEMPLATE.format(k)).dataobj, dtype=np.float32) / 255.0 for k in ("gm", "wm"))
    brain = (t1 > 0).astype(np.float32)
    # Against aliasing: a Gaussian whose full width at half maximum is the new voxel (in source voxels).
    sigma = voxel_mm / float(np.sqrt(np.sum(source_affine[:3, 0] ** 2))) / 2.355
    maps = [ndimage.gaussian_filter(volume, sigma) for volume in (t1, gm, wm, brain)]
    corners = np.argwhere(brain > 0)
    low = source_affine[:3, :3] @ corners.min(axis=0) + source_affine[:3, 3] - MARGIN_MM
    high = source_affine[:3, :3] @ corners.max(axis=0) + source_affine[:3, 3] + MARGIN_MM
    shape = tuple(int(np.ceil(extent / voxel_mm)) for extent in high - low)
    target_affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    target_affine[:3, 3] = low
    centre = (low + high) / 2
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    (root / "imagesTr").mkdir()
    (root / "labelsTr").mkdir()
    records = []
    for index in range(cases):
        case = f"mni152_{index:03d}"
        plan = _draw(rng, index)
        world = _world_transform(plan, centre)
        # output voxel -> world -> template world (the inverse of the case's transform) -> template voxel
        to_source = np.linalg.inv(source_affine) @ np.linalg.inv(world) @ target_affine
        t1_case, gm_case, wm_case, brain_case = (
            ndimage.affine_transform(volume, to_source, output_shape=shape, order=1, mode="constant", cval=0.0)
            for volume in maps
        )
        labels = _labels(gm_case, wm_case, brain_case)
        image = _intensities(t1_case, plan, rng, target_affine, centre)
        stored = "RAS" if index % 4 < 2 else "LPS"
        for array, path in (
            (image, root / "imagesTr" / f"{case}_0000.nii.gz"),
            (labels, root / "labelsTr" / f"{case}.nii.gz"),
        ):
            volume = nib.Nifti1Image(array, target_affine)
            volume.header.set_xyzt_units("mm")
            if stored != "RAS":
                volume = volume.as_reoriented(nib.orientations.axcodes2ornt(tuple(stored)))
            nib.save(volume, path)
        records.append({"case": case, **plan, "stored_orientation": stored})
        if progress is not None:
            progress(index + 1, cases)
    description = {
        "name": "MNI152-tissue",
        "description": (
            f"Grey matter, white matter and the rest of the brain in {cases} cases made from the MNI ICBM152 "
            "2009a nonlinear symmetric template (nilearn's copy) by rotation, scaling, shifts, mirroring, "
            "intensity gamma, a bias field and Rician noise; written by segadv demo-data --kind mni152 "
            "(core/data/mni152.py documents how)."
        ),
        "reference": REFERENCE,
        "licence": COPYRIGHT,
        "release": f"segadv mni152 v{VERSION}",
        "tensorImageSize": "3D",
        "channel_names": {"0": "T1"},
        "labels": LABELS,
        "numTraining": cases,
        "file_ending": ".nii.gz",
        "segadv": {
            "generator": "core.data.mni152",
            "version": VERSION,
            "size": size,
            "seed": seed,
            "voxel_mm": voxel_mm,
            "label_rule": (
                "grey / white matter where its probability is the largest of grey, white and 1 - grey - white "
                "and at least 0.5; other brain: the rest of the brain mask (T1 > 0, at half after resampling)"
            ),
            "cases": records,
        },
    }
    (root / "dataset.json").write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    (root / "NOTICE").write_text(_notice(cases, voxel_mm), encoding="utf-8")


def _draw(rng: np.random.Generator, index: int) -> dict:
    """One case's transform, as recorded in dataset.json."""
    return {
        "rotation_deg": [round(float(v), 3) for v in rng.uniform(-1, 1, 3) * np.array([6.0, 6.0, 10.0])],
        "scale": round(float(rng.uniform(0.92, 1.08)), 4),
        "shift_mm": [round(float(v), 3) for v in rng.uniform(-4, 4, 3)],
        "mirrored": index % 2 == 1,
        "gamma": round(float(np.exp(rng.uniform(np.log(0.75), np.log(1.35)))), 4),
        "bias": [round(float(v), 4) for v in rng.uniform(-0.1, 0.1, 3)],
        "noise": round(float(rng.uniform(0.01, 0.03)), 4),
    }


def _world_transform(plan: dict, centre: np.ndarray) -> np.ndarray:
    """4 x 4 world (mm) transform of a case: rotate, scale and mirror about ``centre``, then shift."""
    ax, ay, az = np.radians(plan["rotation_deg"])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    linear = rz @ ry @ rx * plan["scale"]
    if plan["mirrored"]:
        linear = linear @ np.diag([-1.0, 1.0, 1.0])
    transform = np.eye(4)
    transform[:3, :3] = linear
    transform[:3, 3] = centre - linear @ centre + np.asarray(plan["shift_mm"])
    return transform


def _labels(gm: np.ndarray, wm: np.ndarray, brain: np.ndarray) -> np.ndarray:
    rest = np.clip(1.0 - gm - wm, 0.0, 1.0)
    winner = np.argmax(np.stack([gm, wm, rest]), axis=0)
    inside = brain >= 0.5
    labels = np.where(inside, LABELS["Other brain"], LABELS["background"]).astype(np.uint8)
    labels[inside & (winner == 0) & (gm >= 0.5)] = LABELS["Grey matter"]
    labels[inside & (winner == 1) & (wm >= 0.5)] = LABELS["White matter"]
    return labels


def _intensities(
    t1: np.ndarray, plan: dict, rng: np.random.Generator, affine: np.ndarray, centre: np.ndarray
) -> np.ndarray:
    """Gamma, a linear-in-space bias field (exp of up to +-10 % at 80 mm from the centre) and Rician
    noise, as int16 from 0 to about 1000."""
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in t1.shape), indexing="ij"), axis=-1)
    position = (grid @ affine[:3, :3].T + affine[:3, 3] - centre) / 80.0
    bias = np.exp(position @ np.asarray(plan["bias"]))
    signal = np.clip(t1, 0.0, None) ** plan["gamma"] * bias
    noise = plan["noise"] * rng.standard_normal((2, *t1.shape))
    magnitude = np.sqrt((signal + noise[0]) ** 2 + noise[1] ** 2)
    return np.round(magnitude * 1000).astype(np.int16)


def _notice(cases: int, voxel_mm: float) -> str:
    files = ", ".join(TEMPLATE.format(kind) for kind in ("t1", "gm", "wm"))
    return (
        "This data set was made by segadv (`segadv demo-data --kind mni152`, core/data/mni152.py) from the\n"
        f"MNI ICBM152 2009a nonlinear symmetric template as nilearn ships it (nilearn/datasets/data/: {files}):\n"
        f"{cases} cases resampled to {voxel_mm:g} mm voxels after small rotations, scaling, shifts, mirroring and\n"
        "intensity changes (dataset.json records each), with grey matter, white matter and other brain labels\n"
        "derived from the template's probability maps. The template's copyright notice, as the McConnell Brain\n"
        "Imaging Centre publishes it with the ICBM 2009 atlases (nilearn's own description of the template,\n"
        "datasets/description/icbm152_2009.rst, gives its licence as unknown), applies to it and to every copy:\n\n"
        f"{COPYRIGHT}\n\nReferences: {REFERENCE}\n"
    )
