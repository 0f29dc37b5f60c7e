"""The names of attacks, losses, defences and scoring policies, without torch, so front ends can list them at import
time.

core.attacks, core.losses and core.metrics re-export these; they validate against them.
"""

MODES = ("textbook", "paper")
# The threat models (core.attacks.norms): the ball the perturbation of a slice lies in.
NORMS = ("linf", "l2")
TARGETS = ("gt", "pred")
# The paper's losses (its notebook and Table II), then the segmentation attack losses of the robustness
# literature in their sigmoid (multi-label) form; see core.losses.
PAPER_LOSS_NAMES = ("bce", "focal", "dice", "focal+dice")
LOSS_NAMES = PAPER_LOSS_NAMES + ("masked-bce", "balanced-bce", "cos-bce", "seg-bce", "js", "hallucinate")
LOSS_TITLES = {
    "bce": "BCE",
    "focal": "Focal",
    "dice": "Dice",
    "focal+dice": "Focal + Dice",
    "masked-bce": "Masked BCE",
    "balanced-bce": "Balanced BCE",
    "cos-bce": "Cos BCE",
    "seg-bce": "SegPGD BCE",
    "js": "JS",
    "hallucinate": "Hallucinate",
}
EMPTY_POLICIES = ("one", "skip", "zero")
# Per-slice scores (core.metrics): DSC always; the boundary metrics in mm when asked.
METRIC_NAMES = ("dsc", "hd95", "nsd")
# 2 mm: a little over one pixel of a UW-Madison slice at model resolution (1.5 mm x 266 / 224 = 1.8 mm), so
# a boundary off by one pixel counts as right and one off by two does not.
DEFAULT_NSD_TOLERANCE = 2.0
# Adversarial training (core.training.adversarial).
ADV_METHODS = ("fgsm-rs", "pgd")
ADV_TITLES = {"fgsm-rs": "FGSM-RS", "pgd": "PGD"}
PRECISIONS = ("fp32", "bf16", "fp16")
# The MRI corruptions (core.evaluation.corruptions, which fixes their parameters) and their severities 1..5.
CORRUPTION_TITLES = {
    "noise": "Gaussian noise",
    "bias": "Bias field",
    "motion": "Motion",
    "ghosting": "Ghosting",
    "spike": "Spike",
    "blur": "Blur",
    "gamma": "Gamma",
}
CORRUPTION_NAMES = tuple(CORRUPTION_TITLES)
CORRUPTION_LEVELS = 5


def defence_label(defence: dict | None) -> str:
    """A checkpoint's ``defence`` metadata in a few words: "plain", "FGSM-RS AT eps 0.012", "PGD-3 AT ...",
    marked when the training's check saw catastrophic overfitting."""
    if not defence:
        return "plain"
    method = defence.get("method", "?")
    title = ADV_TITLES.get(method, str(method))
    if method == "pgd":
        title += f"-{defence.get('steps', '?')}"
    eps = defence.get("eps")
    label = f"{title} AT eps {eps:g}" if isinstance(eps, (int, float)) else f"{title} AT"
    if defence.get("collapsed_epochs"):
        label += " (catastrophic overfitting seen)"
    return label
