"""The three organs of the UW-Madison GI Tract data set, in the order of train.csv and of the logits.

The UW-Madison reader's names; everything else follows the label set of the data or the checkpoint
(``core.labels``), of which ``UW_MADISON`` is one."""

from core.labels import UW_MADISON

ORGANS = UW_MADISON.names
ORGAN_TITLES = UW_MADISON.titles
