"""The names of attacks, losses and scoring policies, without torch, so front ends can list them at import time.

core.attacks, core.losses and core.metrics re-export these; they validate against them.
"""

METHODS = ("fgsm", "bim", "pgd")
MODES = ("textbook", "paper")
TARGETS = ("gt", "pred")
# The paper's losses (its notebook and Table II), then the segmentation attack losses of the robustness
# literature in their sigmoid (multi-label) form; see core.losses.
PAPER_LOSS_NAMES = ("bce", "focal", "dice", "focal+dice")
LOSS_NAMES = PAPER_LOSS_NAMES + ("masked-bce", "balanced-bce", "cos-bce", "seg-bce", "js")
LOSS_TITLES = {
    "bce": "BCE", "focal": "Focal", "dice": "Dice", "focal+dice": "Focal + Dice", "masked-bce": "Masked BCE",
    "balanced-bce": "Balanced BCE", "cos-bce": "Cos BCE", "seg-bce": "SegPGD BCE", "js": "JS",
}
EMPTY_POLICIES = ("one", "skip", "zero")
