"""The three organs of the UW-Madison GI Tract data set, in the order of train.csv and of the logits."""

ORGANS = ("large_bowel", "small_bowel", "stomach")
ORGAN_TITLES = {"large_bowel": "Large bowel", "small_bowel": "Small bowel", "stomach": "Stomach"}
