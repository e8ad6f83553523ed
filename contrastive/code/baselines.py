"""The baselines a sceptical security engineer runs before believing a pretrained detector, on the pipeline's
label draws: TF-IDF of token 1-2 grams with class-weighted logistic regression (`tfidf`), and the same model
self-trained on the unlabelled training functions (`tfidf_self_training`). scikit-learn (Pedregosa et al.
2011, JMLR 12): TfidfVectorizer, LogisticRegression, average_precision_score.

Each is a contrastive.evaluate.baselines.Baseline: fit(labeled, pool, val, num_classes, seed, positive) ->
items -> float (len(items), num_classes) probabilities. `pool` (the training split) is read without labels;
`val` (the fraction's validation split) chooses the settings. The TF-IDF vocabulary and weights are fitted on
the pool once, whatever the number of draws (`space_of`; ~60,000 functions on the whole Juliet suite).

Measured on the whole Juliet suite by a colleague (task vulnerable, 1% labels, test PR-AUC of "vulnerable"):
label spreading over TF-IDF vectors 0.57, TF-IDF self-training 0.75, plain class-weighted TF-IDF 0.77. Label
spreading is therefore left out; self-training stays, as the baseline that reads the unlabelled pool.
"""

from __future__ import annotations

import numpy as np

from contrastive.errors import ContrastiveError
from contrastive.protocol import best_on_validation
from contrastive.protocol import validation_measure as val_measure

NGRAMS = (1, 2)  # token unigrams and bigrams
MAX_FEATURES = 50_000  # the most frequent n-grams of the pool (the first TF-IDF baseline's cut, kept)
# Inverse L2 strength of the logistic regression: scikit-learn's default C=1 with two decades either side.
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
# Self-training rounds: after round r the pseudo-labelled set holds, per class, SHARES[r] * len(pool) / C of the
# pool items the previous round's model predicts most confidently as that class; the round is chosen on val.
# The share doubles each round; class-balanced self-training (Zou et al. 2018, ECCV, "CBST") also grows its
# confident share round by round (there from 20% by 5% a round).
SELF_TRAINING_SHARES = (0.05, 0.1, 0.2, 0.4)
SPACES_KEPT = 2  # pools whose TF-IDF space is cached (the pipeline runs on one)


def documents(items) -> list[str]:
    """Each function's whole normalised token list (CodeSet.texts: tokens joined by whitespace), uncut and
    not mapped through the encoder's vocabulary."""
    return list(items.texts)


class TokenSpace:
    """TF-IDF fitted on one pool (sublinear tf), with the matrices of the item sets it transformed, held by
    identity (the pool, and the few sets asked for last: a draw's labelled items, validation, test)."""

    def __init__(self, pool, keep: int = 4):
        from sklearn.feature_extraction.text import TfidfVectorizer

        docs = documents(pool)
        if not any(doc.strip() for doc in docs):
            raise ContrastiveError("the TF-IDF baselines need the functions' source text (CodeSet.texts), and "
                                   "these items have none; load the data with contrastive.code.data.load_code")
        self.vectorizer = TfidfVectorizer(tokenizer=str.split, token_pattern=None, lowercase=False,
                                          ngram_range=NGRAMS, max_features=MAX_FEATURES, sublinear_tf=True,
                                          dtype=np.float32)
        self.pool, self.keep = pool, keep
        self.pool_x = self.vectorizer.fit_transform(docs)  # sparse (len(pool), features)
        self.seen: list[tuple[object, object]] = []

    def __call__(self, items):
        if items is self.pool:
            return self.pool_x
        for i, (split, x) in enumerate(self.seen):
            if split is items:
                self.seen.append(self.seen.pop(i))  # the last asked stays longest
                return x
        x = self.vectorizer.transform(documents(items))
        self.seen = (self.seen + [(items, x)])[-self.keep:]
        return x


_SPACES: list[TokenSpace] = []


def space_of(pool) -> TokenSpace:
    """The TF-IDF space of `pool`, fitted on the first ask and kept (by identity) for every later draw."""
    global _SPACES
    for space in _SPACES:
        if space.pool is pool:
            return space
    space = TokenSpace(pool)
    _SPACES = (_SPACES + [space])[-SPACES_KEPT:]
    return space


def class_probs(model, x, num_classes: int) -> np.ndarray:
    """float (N, num_classes): the model's probabilities, 0 for a class it never saw."""
    out = np.zeros((x.shape[0], num_classes))
    out[:, model.classes_] = model.predict_proba(x)
    return out


def constant(label: int, num_classes: int):
    """One class drawn: it is certain."""
    def predict(items) -> np.ndarray:
        out = np.zeros((len(items), num_classes))
        out[:, label] = 1.0
        return out

    return predict


def fit_logistic(x, y: np.ndarray, c: float, seed: int, class_weight: str | None = "balanced"):
    """L2 logistic regression; "balanced" weighs each class by n / (classes * its count), so a rare
    vulnerable class counts as much as the common fixed one."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, class_weight=class_weight, max_iter=1000, random_state=seed).fit(x, y)


def chosen_logistic(x, y: np.ndarray, val_x, val_y: np.ndarray, num_classes: int, seed: int,
                    positive: int | None, grid=C_GRID, class_weight: str | None = "balanced"):
    """(the model, its C): one fit per C of `grid`, the best on validation kept (best_on_validation)."""
    models = {c: fit_logistic(x, y, c, seed, class_weight) for c in grid}
    scores = {c: val_measure(class_probs(m, val_x, num_classes), val_y, positive) for c, m in models.items()}
    best = best_on_validation(scores)
    return models[best], best


def tfidf(labeled, pool, val, num_classes: int, seed: int, positive: int | None = None, *, grid=C_GRID,
          class_weight: str | None = "balanced"):
    """TF-IDF fitted on the pool's tokens, class-weighted logistic regression on the labelled items, C chosen
    on validation by PR-AUC of the positive class (accuracy without one)."""
    space, y = space_of(pool), labeled.labels.numpy()
    if len(np.unique(y)) == 1:
        return constant(int(y[0]), num_classes)
    model, _ = chosen_logistic(space(labeled), y, space(val), val.labels.numpy(), num_classes, seed, positive,
                               grid, class_weight)
    return lambda items: class_probs(model, space(items), num_classes)


def confident(probs: np.ndarray, share: float, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pool indices, their pseudo-labels): per class, the share * N / C items predicted as that class with the
    highest probability of it (all of them where fewer are predicted so); `exclude` (bool (N,)) never taken."""
    n_classes = probs.shape[1]
    per_class = max(1, round(share * len(probs) / n_classes))
    predicted = probs.argmax(axis=1)
    picked, labels = [], []
    for c in range(n_classes):
        members = np.flatnonzero((predicted == c) & ~exclude)
        top = members[np.argsort(-probs[members, c], kind="stable")[:per_class]]
        picked.append(top)
        labels.append(np.full(len(top), c))
    return np.concatenate(picked), np.concatenate(labels)


def tfidf_self_training(labeled, pool, val, num_classes: int, seed: int, positive: int | None = None, *,
                        grid=C_GRID, shares=SELF_TRAINING_SHARES):
    """Self-training (Yarowsky 1995; class-balanced as in Zou et al. 2018) of the `tfidf` model: each round
    pseudo-labels the pool with the previous round's model, takes the most confident items of every class
    (a growing share, SELF_TRAINING_SHARES) beside the labelled ones and refits. C is the plain model's,
    chosen on validation; the round is the one best on validation."""
    space, y = space_of(pool), labeled.labels.numpy()
    if len(np.unique(y)) == 1:
        return constant(int(y[0]), num_classes)
    x, val_x, val_y = space(labeled), space(val), val.labels.numpy()
    model, c = chosen_logistic(x, y, val_x, val_y, num_classes, seed, positive, grid)
    pool_x = space(pool)
    known = set(labeled.texts)  # the labelled functions are in the pool: they keep their own labels
    exclude = np.array([t in known for t in pool.texts], dtype=bool)
    rounds, scores = [], {}
    for share in shares:
        picked, pseudo = confident(class_probs(model, pool_x, num_classes), share, exclude)
        model = fit_logistic(_stack(x, pool_x[picked]), np.concatenate([y, pseudo]), c, seed)
        rounds.append(model)
        scores[len(rounds) - 1] = val_measure(class_probs(model, val_x, num_classes), val_y, positive)
    best = rounds[best_on_validation(scores)]
    return lambda items: class_probs(best, space(items), num_classes)


def _stack(a, b):
    from scipy.sparse import vstack

    return vstack([a, b]).tocsr()


BASELINES = {"tfidf": tfidf, "tfidf_self_training": tfidf_self_training}
