"""Training: the loop and what a model kind changes in it.

* :mod:`.loop`: ``train_and_evaluate(config, workdir)``, the one entry point;
* :mod:`.hooks`: the unsupervised VAEs' hooks (batches of images, the week-9 figures);
* :mod:`.semisupervised`: the week-10 hooks (labeled subsets, mixed batches, test error).

Training uses :mod:`ift6266_vae.evaluation` (validation ELBO, BN recomputation) and the
registry of :mod:`ift6266_vae.models`; it never imports the experiments or the CLI.
"""
