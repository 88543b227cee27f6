"""How faithful a map is: ROAD (Rong et al. 2022). A fraction of an image's pixels is removed, the most
relevant first (MoRF) or the least relevant first (LeRF), and filled by noisy linear imputation (each
removed pixel the weighted mean of its 8 neighbours, plus a little noise, so the filling carries no
trace of the removed values); the class's softmax confidence is read before and after.

The imputation is grad-cam's (pytorch_grad_cam.metrics.road.NoisyLinearImputer, the same weights and
equations), written here for two reasons: the library builds its sparse system as a LIL matrix, which
takes 90 % of its time (10x slower on 32 px images), and it draws its noise from torch's global RNG.
Here the noise and the ties' order come from a generator of our own seed: the same numbers on every
run, the same draws for every method (a paired comparison), and the caller's RNG left alone. Exactly
the same number of pixels is removed for every map (ties broken at random): the library's percentile
threshold removes more from a map with many equal values (a CAM's zeros)."""
import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse import csc_matrix
from scipy.sparse.linalg import spsolve
from torch import nn

REMOVED = (0.2, 0.4, 0.6, 0.8)  # fractions of the pixels removed; an image's score is the mean over them
NOISE = 0.01                    # added to each imputed value, in model-input units (grad-cam's)
FORWARD_BATCH = 256             # imputed images per forward pass


def impute(image: torch.Tensor, removed: np.ndarray, generator: torch.Generator, noise=NOISE) -> torch.Tensor:
    """The CHW image with the pixels where `removed` (HW, bool) is True filled by noisy linear
    imputation: each the weighted mean of its in-image neighbours, solved jointly as one sparse system."""
    c, h, w = image.shape
    flat = image.reshape(c, -1).cpu().double().numpy()
    gone = removed.reshape(-1)
    holes = np.flatnonzero(gone)
    n = len(holes)
    unknown = np.full(h * w, -1)
    unknown[holes] = np.arange(n)
    y, x = np.divmod(holes, w)
    rows, cols, weights = [], [], []
    diagonal, rhs = np.zeros(n), np.zeros((n, c))
    from pytorch_grad_cam.metrics.road import neighbors_weights  # grad-cam loads with the first map (cams.py)
    for (dy, dx), weight in neighbors_weights:
        at = np.flatnonzero((y + dy >= 0) & (y + dy < h) & (x + dx >= 0) & (x + dx < w))
        neighbour = (y[at] + dy) * w + x[at] + dx
        diagonal[at] += weight
        known = ~gone[neighbour]
        rhs[at[known]] -= weight * flat[:, neighbour[known]].T
        rows.append(at[~known])
        cols.append(unknown[neighbour[~known]])
        weights.append(np.full((~known).sum(), weight))
    system = csc_matrix((np.concatenate(weights + [-diagonal]),
                         (np.concatenate(rows + [np.arange(n)]), np.concatenate(cols + [np.arange(n)]))),
                        shape=(n, n))
    filled = flat.copy()
    if n:
        filled[:, holes] = spsolve(system, rhs).reshape(n, c).T
    out = torch.from_numpy(filled).float()
    out[:, holes] += noise * torch.randn(c, n, generator=generator)
    return out.reshape(c, h, w)


def removal(maps: np.ndarray, fraction: float, most_relevant: bool, tie_keys: np.ndarray) -> np.ndarray:
    """(N, H, W) bool: for each map, exactly round(fraction * H * W) pixels, its highest (most_relevant)
    or its lowest values, equal values ordered by tie_keys (N, H*W)."""
    n = len(maps)
    values = maps.reshape(n, -1)
    count = int(round(fraction * values.shape[1]))
    removed = np.zeros(values.shape, bool)
    for i in range(n):
        order = np.lexsort((tie_keys[i], -values[i] if most_relevant else values[i]))
        removed[i, order[:count]] = True
    return removed.reshape(maps.shape)


@torch.no_grad()
def confidence(model: nn.Module, images: torch.Tensor, classes: torch.Tensor) -> np.ndarray:
    """Each image's softmax probability of its class, FORWARD_BATCH images at a time."""
    out = [model(images[i:i + FORWARD_BATCH]).float().softmax(1)[torch.arange(len(c)), c]
           for i, c in ((i, classes[i:i + FORWARD_BATCH]) for i in range(0, len(images), FORWARD_BATCH))]
    return torch.cat(out).cpu().numpy()


def road(model: nn.Module, images: torch.Tensor, maps: np.ndarray, classes, seed: int = 0) -> dict:
    """Per image, the change of its class's softmax confidence when its most (morf) or least (lerf)
    relevant pixels are removed, the mean over REMOVED: {"morf": (N,), "lerf": (N,)} arrays. A faithful
    map: morf far below 0, lerf near 0. The same seed draws the same ties and noise for any maps."""
    generator = torch.Generator().manual_seed(seed)
    n = len(images)
    tie_keys = torch.rand(n, maps[0].size, generator=generator).numpy()
    classes = torch.as_tensor(np.asarray(classes), device=images.device)
    before, pixels = confidence(model, images, classes), images.cpu()
    scores = {}
    for name, most_relevant in (("morf", True), ("lerf", False)):
        change = np.zeros(n)
        for fraction in REMOVED:
            removed = removal(maps, fraction, most_relevant, tie_keys)
            filled = torch.stack([impute(x, r, generator) for x, r in zip(pixels, removed)]).to(images.device)
            change += (confidence(model, filled, classes) - before) / len(REMOVED)
        scores[name] = change
    return scores



def random_maps(count: int, grain: tuple, size: tuple, generator: torch.Generator) -> np.ndarray:
    """(count, *size) maps that point nowhere, as smooth as a CAM: uniform noise at the layer's map
    size (grain), resized bilinearly to the image and scaled to [0, 1] like a CAM: the baseline."""
    noise = torch.rand(count, 1, *grain, generator=generator)
    maps = F.interpolate(noise, size=size, mode="bilinear", align_corners=False)[:, 0]
    low, high = maps.amin((1, 2), keepdim=True), maps.amax((1, 2), keepdim=True)
    return ((maps - low) / (high - low)).numpy()
