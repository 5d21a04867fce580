"""How good a trained model is, in numbers.

* :mod:`.elbo`: the ELBO on a split, and the batch-norm statistics inference uses;
* :mod:`.iwae`: the importance-weighted bound (Burda et al. 2016);
* :mod:`.fid`: the Fréchet distance of classifier features of samples and real digits;
* :mod:`.classifier`: that classifier, trained once per data set and cached;
* :mod:`.checkpoint`: ``evaluate(checkpoint)``, all of the above for a trained VAE.

This layer sits on the models; training uses it (validation ELBO, BN recomputation), never
the other way round.
"""
