"""Experiments: sets of training runs and the tables, figures and reports made from them.

* :mod:`.week10`: the semi-supervised label-count table next to Kingma et al. (2014);
* :mod:`.week11`: the optimizer study (time to good samples);
* :mod:`.conv_ablation`: why the 2015 conv graph was ~100x slower (``make profile``);
* :mod:`.report`: one report across the blog weeks from whatever runs exist.

This is the top layer with the CLI: it may import anything below, nothing below imports
it. A new experiment is one module here and, if it needs a command, one subcommand in
:mod:`ift6266_vae.cli`.
"""
