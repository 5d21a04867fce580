"""The symbolic building blocks (Lasagne style), one concern per module.

* :mod:`.layers`: layers that own tagged parameters (``Dense``, ``BatchNorm`` with its
  population statistics, ``Conv2D``), activations, the parameter container models share;
* :mod:`.costs`: the VAE cost terms in nats (Gaussian and Bernoulli NLL, analytic KL, the
  log densities of the IWAE bound);
* :mod:`.optim`: update rules as small functions returning ``updates`` dicts.
"""
