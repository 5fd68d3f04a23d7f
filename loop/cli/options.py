"""Options shared by several commands."""

from __future__ import annotations

from typing import Callable

import click

import generators


def generator_choice_help() -> str:
    """``--generator``'s help: the registered generators."""
    return "Generator name; one of: " + ", ".join(generators.available())


INPUT_NORM_HELP = ("How the model normalises each input image: fixed (ImageNet's statistics) or per_image "
                   "(its own mean and spread); default: the preset's (fixed).")

SPACE_HELP = ("Parameter-space file (TOML, e.g. from `loop fit-grains`) to sample from instead of the "
              "generator's own space; frozen into the run.")

EXEMPLARS_HELP = ("Folder of texture images the crack generator quilts its backgrounds from (its `texture` "
                  "options are their names) instead of scikit-image's; frozen into the run.")


REAL_VAL_HELP = ("A few real images the run places in its parameter space after every cycle (the inverse model) "
                 "and, with masks, scores the model on: DIR/images + DIR/masks, or a folder of images only. The "
                 "anchored policy samples around them. Never the --real test images; frozen into the run (path and "
                 "digest: a resume refuses a changed folder).")

REAL_TILE_HELP = ("Side in px of the tiles real images (--real, --real-val) are predicted in, at their own "
                  "resolution, overlapping by a quarter of it; a multiple of 32 (default: the side the preset "
                  "trains at last, 128 for cpu, 512 for paper).")


AUGMENT_HELP = ("Training augmentation over the preset's, KEY=VALUE[,KEY=VALUE...]: flip, rot90 (on/off), brightness, "
                "contrast, stretch, rotate (degrees; 180 = any angle), zoom; `off` turns every one off first, e.g. "
                "`--augment rotate=180,zoom=0.1` or `--augment off,flip=on`; frozen into the run.")

_SWITCH = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}


def augment_option(text: str | None) -> dict[str, bool | float] | None:
    """``--augment``'s settings as a dict of :class:`loop.config.training.AugmentConfig` fields
    (``None`` without the option); a bad one raises :class:`~loop.config.fields.ConfigError` naming it."""
    if text is None:
        return None
    import dataclasses

    from loop.config.fields import ConfigError
    from loop.config.training import AugmentConfig

    fields = {f.name: f.type for f in dataclasses.fields(AugmentConfig) if not f.name.startswith("_")}
    switches = {name for name, kind in fields.items() if kind in (bool, "bool")}
    settings: dict[str, bool | float] = {}
    for item in (part.strip() for part in text.split(",")):
        if item == "off":  # every augmentation off: switches False, amounts 0
            settings.update({name: False if name in switches else 0.0 for name in fields})
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip().lower()
        if not sep or key not in fields:
            raise ConfigError(f"--augment {item!r}: expected KEY=VALUE with KEY one of {', '.join(fields)}, or off")
        if key in switches:
            if value not in _SWITCH:
                raise ConfigError(f"--augment {key}={value}: expected on or off")
            settings[key] = _SWITCH[value]
        else:
            try:
                settings[key] = float(value)
            except ValueError:
                raise ConfigError(f"--augment {key}={value}: expected a number") from None
    try:
        AugmentConfig(**settings)
    except ConfigError as err:
        raise ConfigError(f"--augment: {err}") from None
    return settings


def exemplars_option(folder: str | None) -> dict[str, str] | None:
    """``--exemplars DIR`` as generator options (``None`` without it)."""
    return {"exemplars": folder} if folder is not None else None


def space_from_file(path: str | None):
    """``--space FILE``'s parameter space (``None`` without the option); a bad file is one error line."""
    if path is None:
        return None
    from generators.space import load_space_file

    return load_space_file(path)


def data_and_model_options(command: Callable) -> Callable:
    """The options ``loop start`` and ``loop compare`` share beyond sizes: ``--space``,
    ``--exemplars``, ``--freeze-random-encoder/--train-random-encoder``, ``--input-norm``, ``--augment``
    and ``--real-val`` (as the keyword arguments ``space_file``, ``exemplars``, ``freeze_random_encoder``,
    ``input_norm``, ``augment``, ``real_val``; ``augment`` already parsed by :func:`augment_option`) and
    ``--real-tile`` (``real_tile``)."""
    from loop.config.training import INPUT_NORMS

    for option in reversed([
        click.option("--space", "space_file", default=None, metavar="FILE", help=SPACE_HELP),
        click.option("--exemplars", default=None, metavar="DIR", help=EXEMPLARS_HELP),
        click.option("--freeze-random-encoder/--train-random-encoder", "freeze_random_encoder", default=None,
                     help="Whether the preset's head-only stages freeze an encoder that starts random (no "
                          "ImageNet weights); default: the preset's (frozen)."),
        click.option("--input-norm", type=click.Choice(INPUT_NORMS), default=None, help=INPUT_NORM_HELP),
        click.option("--augment", default=None, metavar="KEY=VALUE[,...]", help=AUGMENT_HELP,
                     callback=lambda ctx, param, value: augment_option(value)),
        click.option("--real-val", "real_val", default=None, metavar="DIR", help=REAL_VAL_HELP),
        click.option("--real-tile", "real_tile", type=click.IntRange(min=32), default=None, metavar="PX",
                     help=REAL_TILE_HELP),
    ]):
        command = option(command)
    return command
