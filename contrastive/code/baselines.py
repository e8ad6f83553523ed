"""Baselines without pretraining, on the same label draws: TF-IDF over the tokens with logistic
regression (scikit-learn), the classic strong baseline for code classification.

A baseline is a function (labeled, pool, queries, num_classes, seed) -> float (len(queries),
num_classes) class probabilities; `pool` (the whole training split) is used without labels.
"""

from __future__ import annotations

import numpy as np

from contrastive.code.data import PAD

NGRAMS = (1, 2)  # unigrams and bigrams of tokens
MAX_FEATURES = 50_000


def documents(items) -> list[str]:
    """Each item's function (row 0) as a string of token ids, padding left out."""
    rows = items.tokens[:, 0]
    return [" ".join(f"t{i}" for i in row[row != PAD].tolist()) for row in rows]


def tfidf(labeled, pool, queries, num_classes: int, seed: int) -> np.ndarray:
    """TF-IDF fitted on the pool's tokens, logistic regression on the labelled items."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(token_pattern=r"\S+", ngram_range=NGRAMS, max_features=MAX_FEATURES,
                                 sublinear_tf=True, lowercase=False)
    vectorizer.fit(documents(pool))
    y = labeled.labels.numpy()
    probs = np.zeros((len(queries), num_classes))
    present = np.unique(y)
    if len(present) == 1:  # one class drawn: it is certain
        probs[:, present[0]] = 1.0
        return probs
    model = LogisticRegression(max_iter=1000, random_state=seed)  # scikit-learn's default L2, C=1
    model.fit(vectorizer.transform(documents(labeled)), y)
    probs[:, model.classes_] = model.predict_proba(vectorizer.transform(documents(queries)))
    return probs


BASELINES = {"tfidf": tfidf}
