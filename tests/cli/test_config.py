"""``segadv config path | show | edit`` and the settings file's reading and theme writing
(``segadv_tui.config``), on real files."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from segadv_tui.config import KEYS, CannotSave, config_path, documentation, load_settings, save_theme, tomllib


@pytest.fixture()
def config(monkeypatch, tmp_path):
    path = tmp_path / "settings" / "config.toml"
    monkeypatch.setenv("SEGADV_CONFIG", str(path))
    return path


def test_the_path_follows_segadv_config_then_xdg_then_home():
    assert config_path({"SEGADV_CONFIG": "/x/c.toml", "XDG_CONFIG_HOME": "/y"}) == Path("/x/c.toml")
    assert config_path({"XDG_CONFIG_HOME": "/y"}) == Path("/y/segadv/config.toml")
    home = config_path({})
    assert home == Path.home() / ".config" / "segadv" / "config.toml"
    assert config_path({"XDG_CONFIG_HOME": "relative"}) == home  # the XDG rule: a relative one is ignored


def test_config_path_prints_it(run, config):
    result = run("config", "path")
    assert result.exit_code == 0 and result.stdout.strip() == str(config)


def test_the_documentation_is_a_file_with_every_key_commented_out_at_its_default():
    text = documentation()
    assert tomllib.loads(text) == {}  # every line a comment: a new file from it sets nothing
    uncommented = tomllib.loads("\n".join(line.removeprefix("# ") for line in text.splitlines() if " = " in line))
    assert list(uncommented) == [key.name for key in KEYS]
    for key in KEYS:
        assert f"# {key.name} = " in text


def test_show_without_a_file_is_every_default(run, config):
    result = run("config", "show")
    assert result.exit_code == 0, result.output
    assert f"# settings file: {config} (not there" in result.stdout
    assert 'graphics = "auto"\n' in result.stdout and "eps_step = 0.001\n" in result.stdout
    assert "#   eps.up               plus,equals_sign" in result.stdout  # the binding ids
    assert result.stderr == ""


def test_show_names_where_each_value_came_from_and_a_bad_key_is_one_line(run, config, tmp_path):
    config.parent.mkdir()
    (config.parent / "runs").mkdir()
    config.write_text('eps_step = 0.002\ncheckpoint_dirs = ["runs"]\nsplit = 1.5\ncolour = "red"\n')
    result = run("config", "show")
    assert result.exit_code == 2
    out = result.stdout
    assert "eps_step = 0.002\n" in out and f"# default: 0.001; from: {config}" in out
    assert f'checkpoint_dirs = ["{config.parent / "runs"}"]' in out  # relative to the file's folder
    assert "split = 0.1\n" in out  # the bad value: the default
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"warning: {config}: split: must be a number between 0 and 1, not 1.5")
    assert lines[1].startswith(f"warning: {config}: colour: no such key")


def test_a_file_that_is_not_toml_is_one_line_and_every_default(config):
    config.parent.mkdir()
    config.write_text('theme = "nord"\neps_step = \n')
    settings = load_settings(config)
    (problem,) = settings.problems
    assert problem.startswith(f"{config}: not valid TOML (") and problem.endswith("using the defaults")
    assert settings["theme"] is None and set(settings.sources.values()) == {"default"}


def test_a_keymap_keeps_its_good_entries_and_names_the_bad_ones(config):
    config.parent.mkdir()
    config.write_text(
        '[keymap]\n"eps.up" = "n, ctrl+up"\n"eps.down" = "hyperspace"\n"eps.sideways" = "s"\n"table2.copy" = "Y"\n'
    )
    settings = load_settings(config)
    assert settings["keymap"] == {"eps.up": "n,ctrl+up", "table2.copy": "Y"}  # Table II's keys too
    bad_key, bad_id = settings.problems
    assert "keymap.eps.down: 'hyperspace' is not a key" in bad_key
    assert "keymap.eps.sideways: no key has this id" in bad_id


def test_edit_starts_a_new_file_from_the_documentation_and_checks_it_after(run, config, tmp_path, monkeypatch):
    editor = tmp_path / "editor"
    editor.write_text(f'#!{sys.executable}\nimport sys\nopen(sys.argv[1], "a").write("eps_step = 0.5\\n")\n')
    editor.chmod(editor.stat().st_mode | stat.S_IXUSR)
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", str(editor))
    result = run("config", "edit")
    assert config.read_text() == documentation() + "eps_step = 0.5\n"
    assert result.exit_code == 2
    assert "eps_step: must be a number in (0, 0.1], not 0.5" in result.stderr
    monkeypatch.setenv("EDITOR", "false")
    result = run("config", "edit")
    assert result.exit_code == 2 and "exited with status 1" in result.stderr


def test_save_theme_changes_only_the_theme_line(tmp_path):
    path = tmp_path / "config.toml"
    text = '# mine\neps_step = 0.002 # finer\ntheme = "nord"   # was gruvbox\n\n[keymap]\n"eps.up" = "n"  # vi\n'
    path.write_text(text)
    save_theme(path, "dracula")
    assert path.read_text() == text.replace('"nord"', '"dracula"')


def test_save_theme_adds_the_line_before_the_first_table_and_makes_a_new_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('eps_step = 0.002\n[keymap]\n"eps.up" = "n"\n')
    save_theme(path, "nord")
    assert path.read_text() == 'eps_step = 0.002\ntheme = "nord"\n[keymap]\n"eps.up" = "n"\n'
    new = tmp_path / "new" / "config.toml"
    save_theme(new, "nord")
    assert new.read_text() == 'theme = "nord"\n'


@pytest.mark.parametrize(
    "text",
    [
        'theme = """nord"""\n',  # a form it does not rewrite
        'theme = "nord\n',  # not TOML
        "keymap = [\n[1]\n]\n",  # a nested array: the line "[1]" is no table; inserting there would break it
    ],
)
def test_save_theme_refuses_what_it_cannot_rewrite_faithfully_and_leaves_the_file(tmp_path, text):
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(CannotSave, match='theme = "dracula"'):
        save_theme(path, "dracula")
    assert path.read_text() == text
    assert os.listdir(tmp_path) == ["config.toml"]  # no temporary left behind


def test_the_views_are_the_explorer_s():
    from segadv_tui.config import VIEWS
    from segadv_tui.widgets.images import VIEWS as EXPLORER_VIEWS

    assert VIEWS == EXPLORER_VIEWS  # kept apart so reading the file imports no Textual widget
