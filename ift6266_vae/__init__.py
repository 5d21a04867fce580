"""ift6266_vae: batch-normalized VAEs on real-valued MNIST (IFT6266, 2015), rebuilt on PyTensor."""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
