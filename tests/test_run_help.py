"""``b200lab run --help`` lists every option a command line can compose, in its group: the
shipped YAML files, and a plugin's added with ``hydra.searchpath``; the schemas are not groups."""

from __future__ import annotations

from pathlib import Path

from b200lab.core.schema import conf_dir, register_configs
from b200lab.runner.run_help import help_text
from support import REPO

PLUGIN_CONF = REPO / "tests" / "plugins" / "conf"


def groups_of(text: str) -> dict[str, list[str]]:
    section = text.split("== Configuration groups ==", 1)[1].split("== Config ==", 1)[0]
    return {
        group: options.split(", ")
        for group, _, options in (line.partition(": ") for line in section.splitlines())
        if options
    }


def yaml_names(folder) -> set[str]:
    return {p.stem for p in folder.glob("*.yaml")}


def fresh_hydra() -> None:
    """As in a new `b200lab run --help` process: other tests leave Hydra initialised (support.compose)."""
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    GlobalHydra.instance().clear()


def test_run_help_lists_each_groups_files_and_a_search_paths_options_beside_them():
    fresh_hydra()
    shipped = groups_of(help_text([]))
    with_plugins = groups_of(help_text([f"hydra.searchpath=[file://{PLUGIN_CONF}]"]))
    conf = Path(conf_dir())
    for group in ("model", "precision", "attention", "parallelism", "workload", "seq"):
        assert set(shipped[group]) == yaml_names(conf / group), group
        assert set(with_plugins[group]) == yaml_names(conf / group) | yaml_names(PLUGIN_CONF / group), group
    assert "vit_tiny" in with_plugins["model"] and "vit_tiny" not in shipped["model"]
    assert not [g for g in with_plugins if g.split("/")[0] in ("schema", "hydra")]


def test_run_help_ends_with_the_config_the_command_line_composes():
    fresh_hydra()
    text = help_text(["model=gpt_125m", "seq=2k"])
    config = text.split("== Config ==", 1)[1]
    assert "name: gpt_125m" in config and "len: 2048" in config
