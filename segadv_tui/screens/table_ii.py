"""The Table II screen: the current attack over the test split for every loaded checkpoint and loss.

The numbers come from ``core.evaluation.scoring.table_ii`` (FGSM: one gradient per slice and loss, as the paper's
table; BIM and PGD: one run per checkpoint and loss), computed in a cancellable thread worker that
reports progress; ``segadv_tui.render.tables`` lays it out as the CLI's ``table`` command does. The run
index (``segadv_tui.run_index``) records each run and serves a Table II computed before under the same key.
"""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, ProgressBar, Static
from textual.worker import Worker, WorkerState, get_current_worker

from core.attacks.config import AttackConfig
from core.errors import SegadvError
from core.names import PAPER_LOSS_NAMES
from core.wording import mean_over_caption, with_labels_caption
from segadv_tui.messages import Progressed, TableIIFinished
from segadv_tui.render.tables import Table, table_ii_table
from segadv_tui.state import ExplorerState


def run_table_ii(models, records, attack: AttackConfig, losses, *, device, progress, should_stop):
    """``core.evaluation.scoring.table_ii`` with the explorer's attack, for each ``LoadedModel``."""
    from core.evaluation.scoring import table_ii  # torch: in the worker, never on the UI thread

    return table_ii(models, records, losses, attack, device=device, progress=progress, should_stop=should_stop)


def as_table(result, attack: AttackConfig, slices: int) -> Table:
    """The paper's layout, with each attack's success next to its DSC."""
    labels = result.labels or attack.labels
    caption = with_labels_caption(labels, False)
    title = f"Table II: mean DSC{mean_over_caption(labels)} over {slices} test slices{caption}, {attack.label}"
    return table_ii_table(result, title=title, with_success=True)


class TableIIScreen(Screen):
    """Runs on opening; c cancels, r runs again, x exports, Esc goes back."""

    DEFAULT_CSS = """
    TableIIScreen { layout: vertical; }
    TableIIScreen #table2-about { height: auto; padding: 0 1; color: $text-muted; }
    TableIIScreen #table2-progress { height: 1; padding: 0 1; }
    TableIIScreen #table2-status { width: 1fr; padding: 0 1; }
    TableIIScreen DataTable { height: 1fr; margin: 1 1; }
    """
    BINDINGS = [
        Binding("escape", "back", "Back", id="table2.back", tooltip="Back to the explorer (cancels a run)"),
        Binding("c", "cancel", "Cancel", id="table2.cancel", tooltip="Cancel the running evaluation"),
        Binding("r", "run", "Run", id="table2.run", tooltip="Run the evaluation again"),
        Binding("x", "export", "Export", id="table2.export", tooltip="Export the table as CSV and Markdown"),
        Binding("y", "copy", "Copy", id="table2.copy", tooltip="Copy the table (Markdown) to the clipboard"),
    ]

    def __init__(self, state: ExplorerState, losses=PAPER_LOSS_NAMES):
        super().__init__()
        self.state = state
        self.losses = tuple(losses)
        self.attack = state.attack  # the explorer's attack when the screen opened: a run keeps it
        self.records = state.table_ii_records()
        self.table: Table | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        models = ", ".join(path.stem for path in self.state.loaded)
        yield Static(
            f"{self.attack.label} · checkpoints: {models} · {len(self.records)} test slices"
            f"{with_labels_caption(self.state.labels, False)}"
            f"{' (--limit)' if self.state.options.limit else ''}",
            id="table2-about",
        )
        with Horizontal(id="table2-progress"):
            yield ProgressBar(id="table2-bar", show_eta=True)
            yield Static("", id="table2-status")
        yield DataTable(id="table2-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self._start(use_cache=True)  # a Table II computed before (CLI or app) is served from the run index

    def action_run(self) -> None:
        self._start(use_cache=False)

    def _start(self, *, use_cache: bool) -> None:
        if self.running:
            self.notify("Already running (c cancels).")
            return
        if not self.records:
            self.notify(
                f"The test split has no slices{with_labels_caption(self.state.labels, False)}.", severity="warning"
            )
            return
        self.query_one("#table2-status", Static).update("running…")
        self._run(self.state.table_ii_models(), self.records, self.attack, use_cache)

    @property
    def running(self) -> bool:
        return any(w.group == "table2" and w.is_running for w in self.workers)

    @work(thread=True, exclusive=True, exit_on_error=False, group="table2", name="Table II")
    def _run(self, models, records, attack: AttackConfig, use_cache: bool) -> None:
        from core.attacks.control import AttackCancelled
        from segadv_tui.run_index import table_ii_run

        worker = get_current_worker()
        try:
            ran = table_ii_run(
                self.state,
                models,
                records,
                attack,
                self.losses,
                lambda: run_table_ii(
                    models,
                    records,
                    attack,
                    self.losses,
                    device=self.state.device,
                    progress=lambda done, total: self.post_message(Progressed(done, total)),
                    should_stop=lambda: worker.is_cancelled,
                ),
                use_cache=use_cache,
                warn=lambda line: self.app.call_from_thread(self.notify, line, severity="warning", markup=False),
            )
        except AttackCancelled:
            self.post_message(TableIIFinished(None))
            return
        self.post_message(TableIIFinished(as_table(ran.result, attack, len(records)), ran.served_from))

    @on(Progressed)
    def _progressed(self, message: Progressed) -> None:
        self.query_one(ProgressBar).update(total=message.total, progress=message.done)

    @on(TableIIFinished)
    def _finished(self, message: TableIIFinished) -> None:
        if message.table is None:
            self.query_one("#table2-status", Static).update("cancelled")
            return
        self.table = self.state.table_ii = message.table
        served = f" · from the run index (run {message.served_from}; r computes)" if message.served_from else ""
        self.query_one("#table2-status", Static).update(f"done{served} · x exports · y copies")
        table = self.query_one(DataTable)
        table.clear(columns=True)
        table.add_columns(*message.table.headers)
        for row in range(len(message.table.rows)):
            table.add_row(*message.table.styled_row(row))  # the best attack (lowest DSC) in bold

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "table2" and event.state == WorkerState.ERROR:
            self.query_one("#table2-status", Static).update("failed")
            self.app.report_worker_error("Table II", event.worker.error)
            event.stop()

    def action_cancel(self) -> None:
        if not self.running:
            self.notify("Nothing is running.")
            return
        self.workers.cancel_group(self, "table2")
        self.query_one("#table2-status", Static).update("cancelling…")

    def action_back(self) -> None:
        self.workers.cancel_group(self, "table2")
        self.dismiss()

    def action_copy(self) -> None:
        self.app.copy_text("Table II", None if self.table is None else self.table.to_markdown())

    def action_export(self) -> None:
        from segadv_tui.render.tables import save_tables

        if self.table is None:
            self.notify("No finished table to export yet.", severity="warning")
            return
        stem = self.state.options.export_dir / self.state.table_ii_stem(self.attack)
        try:
            paths = save_tables(self.table, stem)
        except SegadvError as exc:  # the message names the file
            self.notify(f"Could not export: {exc}", severity="error", markup=False)
            return
        self.notify("Saved " + ", ".join(str(p) for p in paths))
