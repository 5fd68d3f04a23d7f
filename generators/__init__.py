"""Parametric generators of synthetic microscopy images, and their parameter spaces."""

from generators.base import TASKS, Generator, GeneratorError, Sample, check_size
from generators.registry import available, get_generator, register
from generators.space import (
    Choice,
    Continuous,
    Dimension,
    Integer,
    LogRange,
    ParamSpace,
    ParamSpaceError,
)

__all__ = [
    "TASKS", "Generator", "GeneratorError", "Sample", "check_size",
    "available", "get_generator", "register",
    "Choice", "Continuous", "Dimension", "Integer", "LogRange", "ParamSpace", "ParamSpaceError",
    "GrainGenerator", "CrackGenerator",
]

from generators.grains import GrainGenerator

register("grains", GrainGenerator)

from generators.cracks import CrackGenerator

register("cracks", CrackGenerator, options={"exemplars": "path"})
