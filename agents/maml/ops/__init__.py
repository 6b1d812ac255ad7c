"""Custom autograd ops for second-order MAML: a grouped convolution and a training-mode batch norm, each with a
direct double backward."""
from .batchnorm import batch_norm_train
from .conv import conv2d_grouped

__all__ = ["batch_norm_train", "conv2d_grouped"]
