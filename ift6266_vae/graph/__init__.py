"""PyTensor-level constructions and how graphs are compiled.

* :mod:`.conv`: convolution, pooling and upsampling built from PyTensor primitives (PyTensor
  3 has no multi-channel conv or pooling op), fast and 2015 constructions side by side;
* :mod:`.rewrites`: graph rewrites the package adds to the C/VM mode (numpy sums);
* :mod:`.backends`: backend name -> PyTensor compile mode, the package's one compile entry
  point (``backends.function``); a new backend starts here;
* :mod:`.jax_backend`: what the JAX backend needs on top of PyTensor's (shape-specialised
  functions, float32 reductions), loaded only when JAX is asked for.

Nothing here imports models, training or experiments, and importing it changes no global
state: BLAS set-up and dispatch registration happen when a backend is first used.
"""
