"""Weak sub-class labels for unlabelled normal data (the paper's Y-GAN*, Section VI-C).

The paper clusters ImageNet EfficientNet-B4 features (PCA to 100 dims, k-means, k by the
average silhouette). Pretrained weights cannot be downloaded here, so the features are the
normalised pixels themselves, reduced by PCA; the rest of the recipe is the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WeakLabels:
    labels: np.ndarray
    clusters: int
    silhouette: dict[int, float]
    features: str

    def summary(self) -> dict:
        return {
            "clusters": self.clusters,
            "silhouette": {str(k): round(v, 4) for k, v in self.silhouette.items()},
            "features": self.features,
        }


def weak_labels(
    images: np.ndarray,
    k_range: tuple[int, int] = (2, 12),
    pca_dims: int = 100,
    seed: int = 0,
    silhouette_sample: int = 2000,
) -> WeakLabels:
    """k-means cluster ids of (N, C, H, W) float images, k chosen by mean silhouette."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score

    flat = images.reshape(len(images), -1).astype(np.float64)
    dims = min(pca_dims, flat.shape[0] - 1, flat.shape[1])
    features = PCA(n_components=dims, random_state=seed).fit_transform(flat)
    rng = np.random.default_rng(seed)
    sample = rng.permutation(len(features))[: min(silhouette_sample, len(features))]
    scores: dict[int, float] = {}
    fits: dict[int, np.ndarray] = {}
    low, high = k_range
    for k in range(low, min(high, len(features) - 1) + 1):
        labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(features)
        if len(np.unique(labels[sample])) < 2:
            continue
        scores[k] = float(silhouette_score(features[sample], labels[sample], random_state=seed))
        fits[k] = labels
    if not scores:
        raise ValueError("too few images to cluster into weak labels")
    best = max(scores, key=scores.get)
    return WeakLabels(fits[best].astype(np.int64), best, scores, f"PCA({dims}) of pixels")
