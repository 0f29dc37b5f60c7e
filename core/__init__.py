"""segadv's compute core: data, models, checkpoints, losses, attacks, metrics, training.

Nothing here imports Textual or prints: front ends live in ``segadv_tui``.
"""

__version__ = "0.1.0"
