"""Options shared by several commands."""

from __future__ import annotations

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


def exemplars_option(folder: str | None) -> dict[str, str] | None:
    """``--exemplars DIR`` as generator options (``None`` without it)."""
    return {"exemplars": folder} if folder is not None else None


def space_from_file(path: str | None):
    """``--space FILE``'s parameter space (``None`` without the option); a bad file is one error line."""
    if path is None:
        return None
    from generators.space import load_space_file

    return load_space_file(path)
