"""``b200lab run --help``: the groups and options a command line can compose, then its config.

Hydra's own app help lists groups from the search path it started with, so options a command
line adds with ``hydra.searchpath=[file:///DIR]`` (a plugin's YAML files) were missing from their
group, and the schemas (``schema/<group>``, which only option files extend) were listed as if
they were groups. Here both come from Hydra's config loader with the command line's overrides.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from b200lab.core.schema import conf_dir

INTERNAL = ("hydra", "schema")  # Hydra's own groups (`b200lab run --hydra-help`) and the schemas


def option_groups(overrides: list[str]) -> dict[str, list[str]]:
    """{group: its options}, nested groups as ``experiment/nightly``, for this command line."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType

    loader = GlobalHydra.instance().config_loader()

    def options(group: str, kind) -> list[str]:
        return sorted(loader.get_group_options(group, kind, config_name="config", overrides=overrides))

    found: dict[str, list[str]] = {}
    pending = [name for name in options("", ObjectType.GROUP) if name not in INTERNAL]
    while pending:
        group = pending.pop(0)
        configs = options(group, ObjectType.CONFIG)
        if configs:
            found[group] = configs
        pending += [f"{group}/{child}" for child in options(group, ObjectType.GROUP)]
    return dict(sorted(found.items()))


def help_text(overrides: list[str]) -> str:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3", job_name="b200lab"):
        groups = option_groups(overrides)
        cfg = compose(config_name="config", overrides=overrides)
    lines = [
        "b200lab run: one job, or a sweep with -m (Hydra's flags: b200lab run --hydra-help)",
        "",
        "== Configuration groups ==",
        "Compose your configuration from those groups (group=option)",
        "",
        *(f"{group}: {', '.join(names)}" for group, names in groups.items()),
        "",
        "== Config ==",
        "Override anything in the config (foo.bar=value)",
        "",
        OmegaConf.to_yaml(cfg),
    ]
    return "\n".join(lines)
