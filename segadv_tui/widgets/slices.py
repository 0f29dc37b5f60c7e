"""The Slices panel: case -> day -> slice, optionally only the slices with labels (UW-Madison: organs); j / k
step through."""

from __future__ import annotations

from rich.text import Text
from textual.message import Message
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from core.data.gitract import SliceRecord, with_labels
from core.labels import UW_MADISON, LabelSet
from core.wording import with_labels_caption


class SliceBrowser(Tree):
    """A tree of the data set's slices; day nodes fill in their slices when first opened."""

    class Chosen(Message):
        def __init__(self, record: SliceRecord):
            super().__init__()
            self.record = record

    def __init__(self, **kwargs):
        super().__init__("slices", **kwargs)
        self.show_root = False
        self.guide_depth = 2
        self.all_records: list[SliceRecord] = []
        self.records: list[SliceRecord] = []  # the shown ones, in order
        self.organs_only = True
        self.labels = UW_MADISON  # the data's: what "with labels" says
        self.current: SliceRecord | None = None
        self._day_nodes: dict[str, TreeNode] = {}
        self._slice_nodes: dict[str, TreeNode] = {}

    def set_records(self, records: list[SliceRecord], labels: LabelSet = UW_MADISON) -> None:
        self.all_records, self.labels = list(records), labels
        self._rebuild()

    def set_organs_only(self, organs_only: bool) -> None:
        self.organs_only = organs_only
        self._rebuild()

    def _rebuild(self) -> None:
        self.records = with_labels(self.all_records) if self.organs_only else list(self.all_records)
        self.clear()
        self._day_nodes.clear()
        self._slice_nodes.clear()
        self.border_subtitle = f"{len(self.records)} slices" + with_labels_caption(self.labels, not self.organs_only)
        cases: dict[object, TreeNode] = {}
        for record in self.records:
            scan = _scan(record)
            if scan not in self._day_nodes:
                if hasattr(record, "case_day"):  # UW-Madison: case -> day -> slices
                    if record.case not in cases:
                        cases[record.case] = self.root.add(f"case{record.case}", expand=False)
                    self._day_nodes[scan] = cases[record.case].add(f"day{record.day}", data=[])
                else:  # a volume per case (Decathlon): case -> slices
                    self._day_nodes[scan] = self.root.add(str(record.case), data=[], expand=False)
            self._day_nodes[scan].data.append(record)
        if self.current is not None and self.current.id in {r.id for r in self.records}:
            self.reveal(self.current)

    def _fill_day(self, node: TreeNode) -> None:
        if node.children or not isinstance(node.data, list):
            return
        for record in node.data:
            label = Text(f"slice {record.slice:04d}" if hasattr(record, "slice") else f"slice {record.index:03d}")
            if record.has_labels:
                label.append(" ●", style="green")
            self._slice_nodes[record.id] = node.add_leaf(label, data=record)

    def on_tree_node_expanded(self, event: Tree.NodeExpanded) -> None:
        self._fill_day(event.node)

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        event.stop()
        record = event.node.data
        if record is not None and not isinstance(record, list) and record != self.current:
            self.current = record
            self.post_message(self.Chosen(record))

    def reveal(self, record: SliceRecord) -> None:
        """Open the record's case and day and put the cursor on it."""
        day = self._day_nodes.get(_scan(record))
        if day is None:
            return
        day.parent.expand()
        self._fill_day(day)
        day.expand()
        node = self._slice_nodes[record.id]
        self.current = record
        self.call_after_refresh(self.move_cursor, node)

    def choose(self, record: SliceRecord) -> None:
        self.reveal(record)
        self.post_message(self.Chosen(record))

    def neighbours(self, record: SliceRecord) -> list[SliceRecord]:
        """The slices ``j`` and then ``k`` would choose from ``record`` (none that is ``record`` itself)."""
        index = next((i for i, shown in enumerate(self.records) if shown.id == record.id), None)
        if index is None:
            return []
        return [self.records[i] for i in (index + 1, index - 1) if 0 <= i < len(self.records)]

    def step(self, offset: int) -> None:
        """Choose the slice ``offset`` places from the current one among those shown."""
        if not self.records:
            return
        ids = [r.id for r in self.records]
        index = ids.index(self.current.id) if self.current is not None and self.current.id in ids else -1
        self.choose(self.records[max(0, min(len(self.records) - 1, index + offset))])


def _scan(record) -> str:
    """The tree node a record's slice hangs under: its case and day (UW-Madison), else its case."""
    return getattr(record, "case_day", None) or f"case {record.case}"
