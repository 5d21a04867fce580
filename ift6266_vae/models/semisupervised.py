"""The week-10 semi-supervised VAE: the model as blogged (``blog``) and Kingma et al.'s M2 (``m2``).

Both are feedforward BN-VAEs built like the week-9 model (every linear layer followed by
BN, the 2015 ReLU / tanh / hard-tanh, uniform init, Gaussian decoder of variance 1/2), with
a classifier ``q(y|x)`` (softmax over 10 classes) and a label that enters the decoder
concatenated to the sampled code. Costs are per-example *negative* bounds in nats; the
training objective is their minibatch sum (as the 2015 cost) plus a classification term.

``blog`` (the 12 April 2015 post, as written)
    One encoder trunk ``x -> h`` shared by two heads: the Gaussian code ``(mu, sigma)``
    and the classifier ``Y' = softmax(BN(linear(h)))`` (``classifier`` hidden layers, if
    any, sit between ``h`` and that head): "two models that share parameters". The decoder
    reads ``[z, label]`` where ``label`` is the true one-hot when the example is labeled
    and ``Y'`` when not. Cost per example ``nll + KL(q(z|x) || N(0, I)) + 1{labeled} *
    alpha * CE(Y', y)`` with ``alpha = 1`` by default: exactly the blogged
    ``nll + KL + 1{labeled} * softmax_cross_entropy``. There is no KL (nor prior) on the
    label part of the code, so with no labels this is a plain VAE with KL on the ``z`` part
    of its code only (the author's own caveat: "may need another KL term").

``m2`` (Kingma, Rezende, Mohamed, Welling 2014, "Semi-supervised learning with deep
generative models")
    ``p(y) = Cat(1/10)``, ``p(z) = N(0, I)``, ``p(x|y,z)`` (decoder on ``[z, onehot(y)]``),
    ``q(z|x,y)`` (encoder on ``[x, onehot(y)]``), ``q(y|x)`` (a separate classifier MLP).
    Labeled cost ``L(x,y) = nll(x|y,z) + KL(q(z|x,y) || p(z)) - log p(y)`` (the negative
    labeled bound); unlabeled cost ``U(x) = sum_y q(y|x) L(x,y) - H(q(y|x))`` (the label
    marginalised by summing the labeled bound over the 10 classes); objective
    ``sum L + sum U + (alpha / N_labeled) * sum_labeled -log q(y|x)``. The paper's
    ``J^alpha = J + alpha * E_labeled[-log q(y|x)]`` with ``J`` a sum over the data set,
    so each labeled example carries ``alpha / N_labeled`` of cross-entropy next to its
    bound; ``alpha = 0.1 * N`` (``N`` training examples) by default, as in the paper.

Two keys serve measurements rather than the models: ``likelihood: "bernoulli"`` swaps the
Gaussian decoder for Kingma et al.'s Bernoulli one (binary cross-entropy of the [0, 1]
intensities), and ``unlabeled_weight`` scales the unlabeled rows' bound (0: the
supervised-classifier control of M2).

Every BN layer is applied once per graph: in a training batch the unlabeled rows of the
M2 encoder and decoder are the unlabeled images tiled over the 10 classes, concatenated
after the labeled rows, and one noise row ``eps`` per image is shared by its 10 class
rows (common random numbers). At inference BN uses population statistics.

The model section of a week-10 config also holds the semi-supervised *training* keys:
``labels`` (number of labeled training examples), ``balanced``, ``label_seed`` (``None``:
the run's seed), ``labeled_per_batch`` (labeled examples in each minibatch of
``train.batch_size``; the rest are unlabeled).
"""

from __future__ import annotations

import copy

import numpy as np
import pytensor.tensor as pt

from ..nn import costs
from ..nn.layers import BatchNorm, Dense, get_activation
from ..rules import Bool, Choice, Float, Int, ListOf, Str
from .base import ACTIVATION, VAEBase, check_same_length
from .feedforward import DEFAULTS as FF_DEFAULTS
from .feedforward import RULES as FF_RULES
from .feedforward import FeedforwardVAE

N_CLASSES = 10
VARIANTS = ("blog", "m2", "m1m2")
LIKELIHOODS = ("gaussian", "bernoulli")

DEFAULTS = {
    **copy.deepcopy(FF_DEFAULTS),  # the week-9 network, BN and decoder settings (own lists)
    "kind": "semisupervised",
    "variant": "m2",
    # classifier hidden layers: None = the variant's default ([] on the shared trunk for
    # blog; the encoder's widths, as a separate network, for m2)
    "classifier": None,
    "classifier_activations": None,
    # weight of the cross-entropy: None = the variant's default (blog 1, m2 0.1 * N)
    "alpha": None,
    # semi-supervised training keys (see the module docstring)
    "labels": 100,
    "balanced": True,
    "label_seed": None,
    "labeled_per_batch": 20,
    # weight of the unlabeled rows' bound in the objective: 1 = the model; 0 = a control in
    # which (m2) the classifier learns from the labeled cross-entropy alone
    "unlabeled_weight": 1.0,
    # p(x|y,z): "gaussian" (the week-9 decoder, variance model.decoder_variance, output
    # model.output_activation) or "bernoulli" (Kingma et al.'s: a sigmoid output, the
    # binary cross-entropy of the [0, 1] intensities; output_activation is then ignored)
    "likelihood": "gaussian",
    # after training, measure with the package's classifier which class the samples of each
    # clamped label show (trains and caches that classifier once, ~3 min, when missing)
    "check_samples": True,
    # m1m2 (Kingma et al.'s M1+M2): M1, a feedforward VAE of these hidden widths (decoder
    # mirrored) and code size, trained on every training digit; M2 runs on M1's posterior
    # means. m1_checkpoint: a trained M1 (None: the training hooks train one in <workdir>/m1).
    # m1_decoder_variance: M1's Gaussian decoder variance. Named deviation from the week-9 0.5,
    # which leaves M1 a code of ~8 nats of KL (m1m2 at 100 labels: 19 % test error); 0.01 keeps
    # ~70 nats (7 %), chosen from 0.05 / 0.01 / 0.003 / 0.001 by validation error (docs/results.md)
    "m1_hidden": [500, 500],
    "m1_code_size": 50,
    "m1_decoder_variance": 0.01,
    "m1_checkpoint": None,
}


RULES = {
    **FF_RULES,
    "kind": Choice("semisupervised"),
    "variant": Choice(*VARIANTS),
    "classifier": ListOf(Int(min=1), optional=True),
    "classifier_activations": ListOf(ACTIVATION, optional=True),
    "alpha": Float(ge=0, optional=True),
    "labels": Int(min=0),
    "balanced": Bool(),
    "label_seed": Int(min=0, optional=True),
    "labeled_per_batch": Int(min=0),
    "unlabeled_weight": Float(ge=0),
    "likelihood": Choice(*LIKELIHOODS),
    "check_samples": Bool(),
    "m1_hidden": ListOf(Int(min=1), min_length=1),
    "m1_code_size": Int(min=1),
    "m1_decoder_variance": Float(gt=0),
    "m1_checkpoint": Str(optional=True),
}


def m1_config(cfg: dict) -> dict:
    """The ``model`` section of M1, the feedforward VAE under an m1m2 model: ReLU layers of
    ``m1_hidden`` widths (the decoder mirrored), code ``m1_code_size``, decoder variance
    ``m1_decoder_variance``, the BN, init and output settings of ``cfg``."""
    hidden = list(cfg["m1_hidden"])
    shared = {k: cfg[k] for k in ("init_range", "bias", "bn_formula", "bn_alpha", "bn_moments", "sigma_offset",
                                  "output_activation")}
    relu = ["relu"] * len(hidden)
    return {**FF_DEFAULTS, **shared, "kind": "feedforward", "encoder": hidden, "encoder_activations": relu,
            "code_size": cfg["m1_code_size"], "decoder_variance": cfg["m1_decoder_variance"],
            "decoder": hidden[::-1], "decoder_activations": list(relu)}


def onehot(y, n: int = N_CLASSES, dtype: str = "float32"):
    """Symbolic one-hot rows of the integer vector ``y``."""
    return pt.cast(pt.eq(y.dimshuffle(0, "x"), pt.arange(n).dimshuffle("x", 0)), dtype)


def default_alpha(model_cfg: dict, n_train: int) -> float:
    """``model.alpha``, or the variant's default: 1 (blog, as blogged), ``0.1 * N`` (m2, as in
    the paper; ``N`` = number of training examples)."""
    a = model_cfg.get("alpha")
    if a is not None:
        return float(a)
    return 1.0 if model_cfg.get("variant", DEFAULTS["variant"]) == "blog" else 0.1 * float(n_train)


class SemiSupervisedVAE(VAEBase):
    kind = "semisupervised"
    DEFAULTS = DEFAULTS
    RULES = RULES

    @classmethod
    def check_config(cls, cfg: dict) -> None:
        check_same_length(cfg, "encoder", "decoder", "classifier")
    n_classes = N_CLASSES

    def __init__(self, config: dict | None = None, seed: int = 0):
        cfg = {**DEFAULTS, **(config or {})}
        if cfg["variant"] not in VARIANTS:
            raise ValueError(f"unknown semi-supervised variant {cfg['variant']!r}; valid: {', '.join(VARIANTS)}")
        if cfg["likelihood"] not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {cfg['likelihood']!r}; valid: {', '.join(LIKELIHOODS)}")
        blog = cfg["variant"] == "blog"
        if cfg["classifier"] is None:
            cfg["classifier"] = [] if blog else list(cfg["encoder"])
        if cfg["classifier_activations"] is None:
            cfg["classifier_activations"] = [] if blog else list(cfg["encoder_activations"])
        super().__init__(cfg)
        for part in ("encoder", "decoder", "classifier"):
            if len(cfg[part]) != len(cfg[f"{part}_activations"]):
                raise ValueError(f"model.{part} and model.{part}_activations must have the same length")
        self.variant = cfg["variant"]
        rng = np.random.default_rng(seed)
        # M2's data: the image pixels, or (m1m2) the posterior means of M1, a frozen feedforward
        # VAE whose weights come from its own training run (the hooks load them)
        self.m1 = FeedforwardVAE(m1_config(cfg), seed=seed) if self.variant == "m1m2" else None
        n_x = cfg["m1_code_size"] if self.m1 is not None else int(np.prod(self.input_shape))
        self.data_dim = n_x
        K = N_CLASSES

        def block(n_in, n_out, prefix, i):
            d = self._register(Dense(n_in, n_out, f"{prefix}.dense{i}", rng, cfg["init_range"], cfg["bias"]))
            bn = self._register(BatchNorm(n_out, f"{prefix}.bn{i}", (0,), cfg["bn_formula"],
                                          alpha=cfg["bn_alpha"], moments=cfg["bn_moments"]))
            return d, bn

        def mlp(n_in, widths, acts, prefix):
            layers, n = [], n_in
            for i, (w, a) in enumerate(zip(widths, acts), 1):
                layers.append((*block(n, w, prefix, i), get_activation(a)))
                n = w
            return layers, n

        # encoder: q(z|x) (blog, shared trunk) or q(z|x,y) (m2: the label joins the input)
        self.enc, n_h = mlp(n_x if blog else n_x + K, cfg["encoder"], cfg["encoder_activations"], "enc")
        self.mu_head = block(n_h, cfg["code_size"], "enc.mu", 1)
        self.sigma_head = block(n_h, cfg["code_size"], "enc.sigma", 1)
        # classifier q(y|x): on the trunk (blog) or its own network from x (m2)
        self.cls, n_c = mlp(n_h if blog else n_x, cfg["classifier"], cfg["classifier_activations"], "cls")
        self.cls_out = block(n_c, K, "cls.out", 1)
        # decoder p(x|y,z) on [z, label]; M1's features are unbounded: a linear output
        self.dec, n_d = mlp(cfg["code_size"] + K, cfg["decoder"], cfg["decoder_activations"], "dec")
        act = pt.sigmoid if cfg["likelihood"] == "bernoulli" else get_activation(
            "linear" if self.m1 is not None else cfg["output_activation"])
        self.out = (*block(n_d, n_x, "dec.out", 1), act)

    @property
    def label_in_encoder(self) -> bool:
        """Whether the encoder reads the label: ``q(z|x,y)`` (m2, m1m2) rather than ``q(z|x)``."""
        return self.variant != "blog"

    @property
    def frozen_variables(self) -> dict:
        """M1's weights and BN statistics (m1m2): saved with the model, never trained."""
        return {} if self.m1 is None else {f"m1.{k}": v for k, v in self.m1.variables.items()}

    # ------------------------------------------------------------------ pieces
    def _flat(self, x):
        """M2's data rows of images ``x``: the pixels, or (m1m2) M1's posterior means with
        its population BN statistics. Rows already of the data width pass through."""
        if x.ndim == 2:
            return x
        if self.m1 is not None:
            return self.m1.encode(x, deterministic=True)[0]
        # an explicit width: numpy cannot infer a -1 dimension of an empty (0-row) batch
        return x.reshape((x.shape[0], self.data_dim))

    def _trunk(self, x, deterministic, collect):
        h = self._flat(x)
        for dense, bn, act in self.enc:
            h = act(bn(dense(h), deterministic, collect))
        return h

    def _classifier_logits(self, h, deterministic, collect):
        for dense, bn, act in self.cls:
            h = act(bn(dense(h), deterministic, collect))
        dense, bn = self.cls_out
        return bn(dense(h), deterministic, collect)

    def classify(self, x, deterministic: bool = False, collect: list | None = None):
        """Logits of ``q(y|x)``, shape (N, 10)."""
        x = self._flat(x)
        h = self._trunk(x, deterministic, collect) if self.variant == "blog" else x
        return self._classifier_logits(h, deterministic, collect)

    def encode(self, x, y=None, deterministic: bool = False, collect: list | None = None):
        """``(mu, log_sigma)`` of ``q(z|x)`` (blog; ``y`` ignored) or ``q(z|x,y)`` (m2; ``y``
        one-hot or class probabilities, (N, 10))."""
        x = self._flat(x)
        if self.label_in_encoder:
            if y is None:
                raise ValueError(f"the {self.variant} encoder q(z|x,y) needs the label y")
            x = pt.concatenate([x, y], axis=1)
        return self.gaussian_heads(self._trunk(x, deterministic, collect), deterministic, collect)

    def _decoder_preactivation(self, z, y, deterministic, collect):
        h = pt.concatenate([z, y], axis=1)
        for dense, bn, act in self.dec:
            h = act(bn(dense(h), deterministic, collect))
        dense, bn, _ = self.out
        return bn(dense(h), deterministic, collect)

    def decode(self, z, y, deterministic: bool = False, collect: list | None = None):
        """Images (N, 1, 28, 28) from the code ``z`` and the label ``y`` ((N, 10), one-hot or
        probabilities) concatenated after it (for the Bernoulli decoder: the pixel means;
        m1m2: M1's decoder applied to the features M2 decodes)."""
        out = self.out[2](self._decoder_preactivation(z, y, deterministic, collect))
        if self.m1 is not None:
            return self.m1.decode(out, deterministic=True)
        return out.reshape((out.shape[0], *self.input_shape))

    def alpha(self, n_train: int) -> float:
        """Weight of the cross-entropy (see the module docstring)."""
        return default_alpha(self.config, n_train)

    # ------------------------------------------------------------------ costs
    def _decoder_terms(self, x, z, y, mu, log_sigma, deterministic, collect):
        """``(means, nll, KL)`` of the decoder on ``[z, y]`` against the data rows ``x`` (images
        as (N, 1, 28, 28); m1m2: M1 features as (N, m1_code_size))."""
        a = self._decoder_preactivation(z, y, deterministic, collect)
        mean = self.out[2](a)
        if self.config["likelihood"] == "bernoulli":
            nll = costs.bernoulli_nll(x, a)  # from the logits: stable where sigmoid saturates
        else:
            nll = costs.gaussian_nll(x, mean, self.config["decoder_variance"])
        shaped = mean if self.m1 is not None else mean.reshape((a.shape[0], *self.input_shape))
        return shaped, nll, costs.gaussian_kl(mu, log_sigma)

    def ssl_loss(self, x_l, y_l, x_u, eps, deterministic: bool = False, ce_weight: float = 1.0,
                 kl_weight=None) -> dict:
        """Symbolic costs of a minibatch of labeled ``(x_l, y_l)`` (int labels) and unlabeled
        ``x_u`` images; ``eps`` has one row per image, labeled rows first. ``x_l`` (and
        ``y_l``) may be ``None``: an unlabeled-only batch.

        Returns per-example terms (labeled rows first): ``elbo`` (minus the cost: the bound,
        in nats; for blog the blogged objective), ``nll``, ``kl`` (for m2 unlabeled rows
        ``sum_y q KL_z + KL(q(y|x) || p(y))``), ``ce`` (labeled rows), the probabilities
        ``q_y``, and ``loss`` = ``-sum(elbo_labeled) - unlabeled_weight * sum(elbo_unlabeled) +
        ce_weight * sum(ce)``, plus ``bn_stats``.
        """
        collect: list = []
        xu = self._flat(x_u)
        xl = self._flat(x_l) if x_l is not None else None
        xs = pt.concatenate([xl, xu], axis=0) if xl is not None else xu
        n_l = xl.shape[0] if xl is not None else 0
        y1 = onehot(y_l) if y_l is not None else None
        if self.variant == "blog":
            h = self._trunk(xs, deterministic, collect)
            mu, ls = self.gaussian_heads(h, deterministic, collect)
            logits = self._classifier_logits(h, deterministic, collect)
            q = pt.special.softmax(logits, axis=1)
            label = pt.concatenate([y1, q[n_l:]], axis=0) if y1 is not None else q
            z = self.sample_code(mu, ls, eps)
            out, nll, kl = self._decoder_terms(xs, z, label, mu, ls, deterministic, collect)
            res = {"nll": nll, "kl": kl, "elbo": -(nll + kl), "mu": mu, "log_sigma": ls, "z": z, "y": out}
        else:
            logits = self.classify(xs, deterministic, collect)
            q = pt.special.softmax(logits, axis=1)
            logq = pt.special.log_softmax(logits, axis=1)
            K = N_CLASSES
            n_u = xu.shape[0]
            # unlabeled rows tiled class-major: rows k*n_u .. (k+1)*n_u - 1 carry class k
            x_rep = pt.tile(xu, (K, 1))
            y_rep = onehot(pt.repeat(pt.arange(K), n_u))
            e_u = eps[n_l:]
            e_rep = pt.tile(e_u, (K, 1))
            if y1 is not None:
                X = pt.concatenate([xl, x_rep], axis=0)
                Y = pt.concatenate([y1, y_rep], axis=0)
                E = pt.concatenate([eps[:n_l], e_rep], axis=0)
            else:
                X, Y, E = x_rep, y_rep, e_rep
            mu, ls = self.encode(X, Y, deterministic, collect)
            z = self.sample_code(mu, ls, E)
            out, nll_r, klz_r = self._decoder_terms(X, z, Y, mu, ls, deterministic, collect)
            log_k = np.float32(np.log(K))
            # per class (columns) and unlabeled example (rows)
            nll_u = nll_r[n_l:].reshape((K, n_u)).T
            klz_u = klz_r[n_l:].reshape((K, n_u)).T
            q_u, logq_u = q[n_l:], logq[n_l:]
            entropy = -pt.sum(q_u * logq_u, axis=1)
            nll_um = pt.sum(q_u * nll_u, axis=1)
            kl_um = pt.sum(q_u * klz_u, axis=1) + log_k - entropy  # + KL(q(y|x) || uniform)
            nll = pt.concatenate([nll_r[:n_l], nll_um]) if y1 is not None else nll_um
            kl = pt.concatenate([klz_r[:n_l] + log_k, kl_um]) if y1 is not None else kl_um
            res = {"nll": nll, "kl": kl, "elbo": -(nll + kl), "labeled_cost_u": nll_u + klz_u + log_k,
                   "entropy_u": entropy, "mu": mu, "log_sigma": ls, "z": z, "y": out}
        if y1 is not None:
            ce = -pt.sum(y1 * pt.special.log_softmax(logits[:n_l], axis=1), axis=1)
        else:
            ce = pt.zeros((0,), dtype=xs.dtype)
        w, wu = np.float32(ce_weight), np.float32(self.config["unlabeled_weight"])
        # the negative bound; with KL warm-up (kl_weight, a symbolic scalar) its KL terms weighted
        cost = -res["elbo"] if kl_weight is None else res["nll"] + kl_weight * res["kl"]
        bound = (pt.sum(cost[:n_l]) + wu * pt.sum(cost[n_l:])) if y1 is not None else wu * pt.sum(cost)
        res.update(ce=ce, q_y=q, logits=logits, bn_stats=collect, loss=bound + w * pt.sum(ce))
        return res

    def loss(self, x, eps, deterministic: bool = False, kl_weight=None) -> dict:
        """Costs of an unlabeled-only batch (what the generic ELBO evaluation and the BN
        population-statistics recomputation use)."""
        return self.ssl_loss(None, None, x, eps, deterministic, kl_weight=kl_weight)

    def forward_flops(self) -> int:
        return sum(2 * layer.n_in * layer.n_out for layer in self.layers.values() if isinstance(layer, Dense))


__all__ = ["SemiSupervisedVAE", "DEFAULTS", "VARIANTS", "N_CLASSES", "default_alpha", "onehot"]
