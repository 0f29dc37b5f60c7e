"""Command palette entries (ctrl+p): every key's action by name, plus choices that have no single key
(a given loss, method or checkpoint), offered only where they apply."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from core.attack_config import METHOD_LIST
from core.names import LOSS_NAMES, LOSS_TITLES
from core.organs import ORGAN_TITLES, ORGANS


class ExplorerCommands(Provider):
    def _commands(self) -> list[tuple[str, object, str]]:
        """(name, callback, help) for the current state of the app."""
        app = self.app
        commands = [
            (binding.description if binding.description else binding.action, partial(app.run_action, binding.action),
             binding.tooltip)
            for binding in app.BINDINGS
            if binding.id and binding.id not in ("quit", "help")
        ]
        commands.append(("Help: every key", app.action_help, "Show the help screen"))
        from segadv_tui.widgets.images import VIEW_TITLES, VIEWS

        for view in VIEWS:
            commands.append((f"View: {VIEW_TITLES[view]}", partial(app.show_view, view),
                             f"Show the {VIEW_TITLES[view].lower()} view of the pictures"))
        settings = app.settings
        if "loss" in settings.entry.parameters:
            for loss in LOSS_NAMES:
                if loss != settings.loss:
                    commands.append((f"Attack loss: {LOSS_TITLES[loss]}", partial(app.set_settings, settings.replace(loss=loss)),
                                     f"Attack with the {LOSS_TITLES[loss]} loss"))
        for method in METHOD_LIST:
            if method.name != settings.method:
                commands.append((f"Attack method: {method.title}", partial(app.set_settings, settings.replace(method=method.name)),
                                 f"{method.title}: {method.summary}"))
        for organ in ORGANS:
            erase = settings.replace(method="erase", organs=(organ,))
            if erase != settings:
                commands.append((f"Erase organ: {ORGAN_TITLES[organ]}", partial(app.set_settings, erase),
                                 f"Targeted attack that removes the {ORGAN_TITLES[organ].lower()} from the prediction"))
        for entry in app.query_one("#checkpoints").entries:
            if entry.meta is not None and (app.checkpoint_entry is None or entry.path != app.checkpoint_entry.path):
                commands.append((f"Load checkpoint: {entry.path.stem}", partial(app.load_checkpoint, entry), entry.summary))
                if entry.path != app.scored_on:
                    commands.append((f"Score on: {entry.path.stem}", partial(app.score_on, entry),
                                     "Attack the current model, show this one's masks and scores (a transfer)"))
        if app.scored_on is not None:
            commands.append(("Score on: the attacked model", partial(app.score_on, None), "White box again"))
        for delta in app.deltas:
            if settings.method != "universal" or str(delta.path) != settings.delta:
                commands.append((f"Universal perturbation: {delta.path.stem}",
                                 partial(app.set_settings, settings.replace(method="universal", delta=str(delta.path))),
                                 delta.summary))
        return commands

    async def discover(self) -> Hits:
        for name, callback, help_text in self._commands():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
