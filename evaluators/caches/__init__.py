"""What an `Evaluator` keeps between evaluations: the dense teacher's outputs per minibatch
(`teacher`) and each block's outputs for the profile the model holds (`prefix`)."""

from .prefix import PrefixCache, find_blocks
from .teacher import TeacherCache

__all__ = ["PrefixCache", "TeacherCache", "find_blocks"]
