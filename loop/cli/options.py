"""Options shared by several commands."""

from __future__ import annotations

import generators


def generator_choice_help() -> str:
    """``--generator``'s help: the registered generators."""
    return "Generator name; one of: " + ", ".join(generators.available())
