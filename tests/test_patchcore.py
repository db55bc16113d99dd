"""PatchCore baseline: coreset selection, kNN distances, detection of a painted defect, save/load, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.baselines.patchcore import IMAGE_BASELINES, PatchCore, PatchCoreConfig, greedy_coreset, knn_distance
from models.errors import CheckpointMismatchError, InputError, NotFittedError
from models.scorers.base import Scorer
from models.transforms.image import normalise_imagenet
from mvtec_data import normal_image, paint


def _tensor(imgs: list[np.ndarray]) -> torch.Tensor:
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255.0
    return normalise_imagenet(x)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    train = _tensor([normal_image(rng) for _ in range(10)])
    good = [normal_image(rng) for _ in range(4)]
    painted = [paint(normal_image(rng), rng) for _ in range(4)]
    model = PatchCore(device="cpu", coreset_ratio=0.25).fit(train)
    return model, _tensor(good), _tensor([p[0] for p in painted]), np.stack([p[1] > 0 for p in painted])


def test_greedy_coreset_covers_every_cluster():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    points = torch.cat([c + 0.1 * torch.randn(50, 2, generator=g) for c in centres])
    idx = greedy_coreset(points, 4, projection_dim=64, seed=1)
    clusters = {int(i) // 50 for i in idx}
    assert clusters == {0, 1, 2, 3}


def _farthest_point_reference(points: torch.Tensor, n_select: int, first: int) -> list[int]:
    """The plain greedy k-center loop (every point updated at every step), float32 like the product."""
    x = points.float()
    sq = (x * x).sum(dim=1)
    chosen = [first]
    min_d = (sq - 2 * (x @ x[first]) + sq[first]).clamp_min(0)
    for _ in range(1, n_select):
        nxt = int(torch.argmax(min_d))
        chosen.append(nxt)
        min_d = torch.minimum(min_d, (sq - 2 * (x @ x[nxt]) + sq[nxt]).clamp_min(0))
    return chosen


@pytest.mark.parametrize("data", ["clustered", "uniform", "duplicates", "mostly_constant"])
@pytest.mark.parametrize("n_cells", [1, 7, 40, 500])
def test_greedy_coreset_selects_what_the_plain_loop_selects(n_cells, data):
    # Clustered points (cells far apart), uniform ones (neighbouring cells: the pruning bound decides), and
    # clustered ones with duplicates (exact ties in distance), and points nearly all equal (ties at distance 0).
    g = torch.Generator().manual_seed(3)
    centres = 6 * torch.randn(25, 12, generator=g)
    points = centres[torch.randint(25, (2000,), generator=g)] + torch.randn(2000, 12, generator=g)
    if data == "uniform":
        points = torch.rand(2000, 3, generator=g)
    if data == "mostly_constant":  # fewer distinct points than centres: every later step is a tie at distance 0
        points = torch.cat([torch.ones(1990, 4), torch.randn(10, 4, generator=g)])
    duplicates = data in ("duplicates", "mostly_constant")
    if duplicates:
        points = torch.cat([points, points[:700]])[torch.randperm(2700, generator=g)]
    first = int(torch.randint(points.shape[0], (1,), generator=torch.Generator().manual_seed(5)))
    got = greedy_coreset(points, 300, projection_dim=64, seed=5, n_cells=n_cells)
    expected = _farthest_point_reference(points, 300, first)
    # The same centres in the same order; of two identical points either may be the one taken.
    assert torch.equal(points[got], points[expected])
    if not duplicates:
        assert got.tolist() == expected


def test_knn_distance_matches_brute_force_and_respects_exclusion():
    g = torch.Generator().manual_seed(0)
    q, bank = torch.randn(37, 5, generator=g), torch.randn(53, 5, generator=g)
    brute = torch.cdist(q, bank).topk(3, largest=False).values.mean(dim=1)
    assert torch.allclose(knn_distance(q, bank, k=3, chunk=8), brute, atol=1e-4)
    # A query identical to a bank row is at distance 0 unless that row is excluded by group.
    qg, bg = torch.zeros(1, dtype=torch.long), torch.arange(53)
    assert knn_distance(bank[:1], bank, k=1).item() == pytest.approx(0.0, abs=1e-3)
    assert knn_distance(bank[:1], bank, k=1, exclude=(qg, bg)).item() > 0.01


def test_knn_distance_holds_a_bounded_block_of_distances_whatever_the_chunk(monkeypatch):
    """A batch of images scored against a bank of 16,386 patches held (4,096 × 16,386) distance blocks several
    times over (``scalowatch score`` peaked at 1.3 GB); the block is bounded by elements now, with the same
    distances."""
    import models.baselines.patchcore as pc

    g = torch.Generator().manual_seed(1)
    q, bank = torch.randn(300, 6, generator=g), torch.randn(500, 6, generator=g)
    qg, bg = torch.arange(300) % 7, torch.arange(500) % 7
    whole = knn_distance(q, bank, k=2, chunk=4096, exclude=(qg, bg))
    sizes = []
    real_topk = torch.Tensor.topk

    def watched(self, *args, **kwargs):
        sizes.append(self.numel())
        return real_topk(self, *args, **kwargs)

    monkeypatch.setattr(pc, "KNN_BLOCK_ELEMENTS", 500 * 64)
    monkeypatch.setattr(torch.Tensor, "topk", watched)
    bounded = knn_distance(q, bank, k=2, chunk=4096, exclude=(qg, bg))
    assert max(sizes) <= 500 * 64 and len(sizes) == 5
    # Equal here to the bit; a BLAS that blocks a matrix product by its row count may differ in the last bit.
    torch.testing.assert_close(bounded, whole, rtol=0, atol=1e-6)
    brute = torch.cdist(q, bank).masked_fill(qg[:, None] == bg[None, :], float("inf"))
    assert torch.allclose(whole, brute.topk(2, largest=False).values.mean(dim=1), atol=1e-4)


def test_painted_defect_scores_higher_and_is_localised(fitted):
    model, good, painted, masks = fitted
    g, p = model.score(good), model.score(painted)
    assert isinstance(model, Scorer)
    assert g.maps.shape == (4, 64, 64) and g.maps.dtype == np.float32
    assert p.scores.min() > g.scores.max()
    # The map's peak falls inside the painted square or within one feature cell (8 px at 64 px) of it.
    for m, mask in zip(p.maps, masks):
        y, x = np.unravel_index(np.argmax(m), m.shape)
        ys, xs = np.nonzero(mask)
        assert ys.min() - 10 <= y <= ys.max() + 10 and xs.min() - 10 <= x <= xs.max() + 10
    # Inside-defect pixels outscore the rest of the same images on average.
    assert p.maps[masks].mean() > p.maps[~masks].mean() + 1.0


def test_scores_do_not_depend_on_batch_composition(fitted):
    model, good, painted, _ = fitted
    both = model.score(torch.cat([good, painted]))
    alone = model.score(painted)
    np.testing.assert_allclose(both.scores[4:], alone.scores, rtol=1e-4)


def test_leave_one_out_stats_standardise_normal_maps(fitted):
    model, good, _, _ = fitted
    mean, std = model.map_stats
    assert std > 0 and mean > 0
    z = model.standardise(model.score(good).maps)
    assert abs(float(np.median(z))) < 3.0


def test_save_load_round_trip(fitted, tmp_path):
    model, good, painted, _ = fitted
    model.save(tmp_path / "pc")
    again = PatchCore.load(tmp_path / "pc", device="cpu")
    assert again.config == model.config
    np.testing.assert_allclose(again.score(painted).scores, model.score(painted).scores, rtol=1e-5)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"scorer": "recon", "format": 1}')
    (tmp_path / "other" / "weights.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointMismatchError):
        PatchCore.load(tmp_path / "other")


def test_errors_are_clear(fitted):
    model, good, _, _ = fitted
    with pytest.raises(NotFittedError):
        PatchCore(device="cpu").score(good)
    with pytest.raises(InputError):
        model.score(good[:, :, :32, :32])
    with pytest.raises(InputError):
        bad = good.clone()
        bad[0, 0, 0, 0] = float("nan")
        model.score(bad)
    with pytest.raises(InputError):
        PatchCore(device="cpu").fit(good[:1])
    with pytest.raises(ValueError):
        PatchCoreConfig(coreset_ratio=0)
    with pytest.raises(ValueError):
        PatchCoreConfig(pool=2)


def test_registered_as_image_baseline():
    assert IMAGE_BASELINES["patchcore"] is PatchCore


def test_greedy_coreset_progress_bar_does_not_change_the_selection(capsys):
    points = torch.rand(3000, 3, generator=torch.Generator().manual_seed(1))
    quiet = greedy_coreset(points, 700, seed=2, n_cells=100)
    shown = greedy_coreset(points, 700, seed=2, n_cells=100, progress=True)
    assert torch.equal(quiet, shown)
    assert "coreset" in capsys.readouterr().err
