"""The names of attacks, losses and scoring policies, without torch, so front ends can list them at import time.

core.attacks, core.losses and core.metrics re-export these; they validate against them.
"""

METHODS = ("fgsm", "bim", "pgd")
MODES = ("textbook", "paper")
TARGETS = ("gt", "pred")
LOSS_NAMES = ("bce", "focal", "dice", "focal+dice")
LOSS_TITLES = {"bce": "BCE", "focal": "Focal", "dice": "Dice", "focal+dice": "Focal + Dice"}
EMPTY_POLICIES = ("one", "skip", "zero")
