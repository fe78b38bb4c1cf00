"""Training side: the recorder for the user's own loop (`watch`) and the built-in trainer."""

from convscope.train.loop import Trainer
from convscope.train.watch import Recorder, watch

__all__ = ["Recorder", "Trainer", "watch"]
