"""Training with any rule: data sets, the loop, checkpoints."""

from pcsim.training.checkpoint import CheckpointError, load_checkpoint
from pcsim.training.data import DataError, Dataset, load_dataset
from pcsim.training.loop import TrainConfig, TrainingError, build_run, evaluate, resume, train

__all__ = ["TrainConfig", "TrainingError", "build_run", "train", "resume", "evaluate", "load_dataset", "Dataset",
           "DataError", "CheckpointError", "load_checkpoint"]
