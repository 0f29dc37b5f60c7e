"""Command palette entries (ctrl+p): every key's action by name, plus choices that have no single key
(a given loss, method or checkpoint), offered only where they apply. What applies is read from the
explorer's state (``segadv_tui.state``); the commands act on the explorer screen."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from textual.actions import parse as parse_action
from textual.command import DiscoveryHit, Hit, Hits, Provider

from core.attacks.config import METHOD_LIST
from core.names import CORRUPTION_NAMES, CORRUPTION_TITLES, LOSS_NAMES, LOSS_TITLES, NORMS
from core.wording import label_noun
from segadv_tui.keys import EXPLORER_KEYS, explorer_eps_tooltips, label_keys, with_eps_tooltips

if TYPE_CHECKING:
    from segadv_tui.screens.explorer import ExplorerScreen


NORM_TITLES = {"linf": "L-inf", "l2": "L2"}


def _applies(explorer: ExplorerScreen, binding) -> bool:
    """Whether the explorer lets ``binding``'s action run now (the eps keys or, under the corrupt method,
    the severity keys)."""
    _, name, parameters = parse_action(binding.action)
    return explorer.check_action(name, parameters) is not False


class ExplorerCommands(Provider):
    def _commands(self) -> list[tuple[str, object, str]]:
        """(name, callback, help) for the current state of the explorer."""
        explorer: ExplorerScreen = self.app.explorer
        state = explorer.state
        # The label keys where UW-Madison's organs are, named by the data's labels.
        first = next(i for i, binding in enumerate(EXPLORER_KEYS) if binding.id.startswith("organ."))
        others = [binding for binding in EXPLORER_KEYS if not binding.id.startswith("organ.")]
        keys = with_eps_tooltips(
            [*others[:first], *label_keys(state.labels), *others[first:]], explorer_eps_tooltips(state)
        )
        commands = [
            (
                binding.description if binding.description else binding.action,
                partial(explorer.run_action, binding.action),
                binding.tooltip,
            )
            for binding in keys
            if binding.id not in ("quit", "help")
            and not (binding.id.startswith("eps.") and not _applies(explorer, binding))
        ]
        commands.append(("Help: every key", self.app.action_help, "Show the help screen"))
        for name, (what, text) in state.copy_texts().items():
            if name != "scores" and text is not None:  # y (a key, listed above) copies the scores
                commands.append(
                    (f"Copy: {what}", partial(self.app.copy_text, what, text), f"Copy {what} to the clipboard")
                )
        from segadv_tui.widgets.images import VIEW_TITLES, VIEWS

        for view in VIEWS:
            commands.append(
                (
                    f"View: {VIEW_TITLES[view]}",
                    partial(explorer.show_view, view),
                    f"Show the {VIEW_TITLES[view].lower()} view of the pictures",
                )
            )
        attack = state.attack
        if "loss" in attack.entry.parameters:
            for loss in LOSS_NAMES:
                if loss != attack.loss:
                    commands.append(
                        (
                            f"Attack loss: {LOSS_TITLES[loss]}",
                            partial(explorer.set_attack, attack.replace(loss=loss)),
                            f"Attack with the {LOSS_TITLES[loss]} loss",
                        )
                    )
        for method in METHOD_LIST:
            if method.name != attack.method:
                commands.append(
                    (
                        f"Attack method: {method.title}",
                        partial(explorer.set_attack, state.changed(method=method.name)),
                        f"{method.title}: {method.summary}",
                    )
                )
        if "norm" in attack.entry.parameters:
            for norm in NORMS:
                if norm != attack.norm:
                    commands.append(
                        (
                            f"Threat model: {NORM_TITLES[norm]}",
                            partial(explorer.set_attack, state.with_norm(norm)),
                            f"Attack in the {NORM_TITLES[norm]} ball, eps kept at the same size per pixel",
                        )
                    )
        for corruption in CORRUPTION_NAMES:
            corrupted = state.changed(method="corrupt", corruption=corruption)
            if corrupted != attack:
                commands.append(
                    (
                        f"Corruption: {CORRUPTION_TITLES[corruption]}",
                        partial(explorer.set_attack, corrupted),
                        f"Not an attack: the {CORRUPTION_TITLES[corruption].lower()} MRI artefact (the eps keys step "
                        "its severity, 1 to 5)",
                    )
                )
        for label in attack.labels.labels:
            erase = state.changed(method="erase", organs=(label.name,))
            if erase != attack:
                commands.append(
                    (
                        f"Erase {label_noun(attack.labels)}: {label.title}",
                        partial(explorer.set_attack, erase),
                        f"Targeted attack that removes the {label.title.lower()} from the prediction",
                    )
                )
        for entry in state.catalog.checkpoints:
            if entry.meta is not None and (state.attacked is None or entry.path != state.attacked.path):
                commands.append(
                    (f"Load checkpoint: {entry.path.stem}", partial(explorer.load_checkpoint, entry), entry.summary)
                )
                if entry.path != state.scored_on:
                    commands.append(
                        (
                            f"Score on: {entry.path.stem}",
                            partial(explorer.score_on, entry),
                            "Attack the current model, show this one's masks and scores (a transfer)",
                        )
                    )
        if state.scored_on is not None:
            commands.append(("Score on: the attacked model", partial(explorer.score_on, None), "White box again"))
        for delta in state.catalog.deltas:
            if attack.method != "universal" or str(delta.path) != attack.delta:
                universal = state.changed(method="universal", delta=str(delta.path))
                commands.append(
                    (
                        f"Universal perturbation: {delta.path.stem}",
                        partial(explorer.set_attack, universal),
                        delta.summary,
                    )
                )
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
