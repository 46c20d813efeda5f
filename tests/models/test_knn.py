"""k-nearest neighbours: hand-made cases with known answers, the tie rules, every distance against a float64
brute force on MNIST with ties, one search for many k, chunking, preprocessing fitted on train only,
the real command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import TINY, config_error, read_metrics, run_cli
from visionlab import patches
from visionlab.data import DeviceSplit, make_splits
from visionlab.data.base import LabeledImages, RawData
from visionlab.data.mnist import MNIST
from visionlab.data.synthetic import Synthetic
from visionlab.errors import UserError
from visionlab.models.knn import KNN
from visionlab.models.knn.float_search import FloatSearch
from visionlab.models.knn.int8_codes import PixelCodes
from visionlab.models.knn.int8_l2 import IntegerL2
from visionlab.models.knn.pruned_l1 import PrunedL1
from visionlab.models.knn.pruned_l2 import PrunedL2

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def points(coords: list[list[int]], labels: list[int]) -> DeviceSplit:
    """A train split whose images are the given points (1 x 1 x D, raw values: no normalization)."""
    images = torch.tensor(coords, dtype=torch.uint8).view(len(coords), 1, 1, -1)
    return DeviceSplit(images, torch.tensor(labels), torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1))


def queries(coords: list[list[float]]) -> torch.Tensor:
    return torch.tensor(coords, dtype=torch.float32).view(len(coords), 1, 1, -1)


def fitted(train: DeviceSplit, num_classes: int = 3, **options) -> KNN:
    model = KNN(tuple(train.images.shape[1:]), num_classes, **options)
    model.fit(train)
    return model


def as_matrix(split: DeviceSplit) -> torch.Tensor:
    return split.batch(torch.arange(len(split)))[0].flatten(1)


# ---- hand-made cases ------------------------------------------------------------------------------


def test_neighbours_on_a_line_come_nearest_first():
    model = fitted(points([[0], [10], [3], [7], [20]], [0, 1, 0, 1, 2]), k=3)
    distances, indices = model.neighbours(queries([[4]]), 3)
    assert indices.tolist() == [[2, 3, 0]]
    assert distances.tolist() == [[1.0, 3.0, 4.0]]
    assert model(queries([[4], [19]])).argmax(1).tolist() == [0, 1]  # votes: (0, 1, 0) and (2, 1, 1)


@pytest.mark.parametrize(
    "distance,p,nearest,expected",
    [
        ("l2", None, 0, 18**0.5),  # (3, 3) at sqrt(18) = 4.24 beats (5, 0) at 5
        ("l1", None, 1, 5.0),  # (5, 0) at 5 beats (3, 3) at 6
        ("lp", 3, 0, 54 ** (1 / 3)),  # (3, 3) at 54^(1/3) = 3.78 beats (5, 0) at 5
        ("cosine", None, 1, 0.0),  # (5, 0) points the same way as (2, 0)
    ],
)
def test_each_distance_measures_what_it_says(distance, p, nearest, expected):
    model = fitted(points([[3, 3], [5, 0]], [0, 1]), distance=distance, p=p)
    query = queries([[0, 0]]) if distance != "cosine" else queries([[2, 0]])
    distances, indices = model.neighbours(query, 1)
    assert indices.item() == nearest
    assert distances.item() == pytest.approx(expected, abs=1e-12)


def test_equal_distances_put_the_lower_training_index_first():
    # 8 and 2 are both 3 away from 5; index 0 (class 1) wins over index 1 (class 0) at k=1.
    model = fitted(points([[8], [2], [9]], [1, 0, 0]))
    assert model.neighbours(queries([[5]]), 2)[1].tolist() == [[0, 1]]
    assert model(queries([[5]])).argmax(1).item() == 1


def test_many_identical_images_keep_the_lowest_indices():
    # 200 copies of one image among decoys: more equal distances than float32 candidates, so the exact
    # re-ranking of everything the rounding bound cannot rule out decides, by training index.
    coords = [[200, 200, 200]] * 30 + [[7, 9, 11]] * 200 + [[8, 9, 11]] * 5
    labels = [0] * 30 + [1, 2] * 100 + [0] * 5
    model = fitted(points(coords, labels), k=5)
    distances, indices = model.neighbours(queries([[7, 9, 11]]), 5)
    assert indices.tolist() == [[30, 31, 32, 33, 34]]
    assert distances.tolist() == [[0.0] * 5]


@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_equal_votes_go_to_the_lowest_class_index(weights):
    model = fitted(points([[4], [6]], [2, 1]), k=2, weights=weights)
    scores = model(queries([[5]]))
    assert scores.tolist() == [[0.0, 0.5, 0.5]]
    assert scores.argmax(1).item() == 1


def test_uniform_votes_ignore_which_neighbour_is_nearer():
    # one vote each, 1:1, so class 1 wins although the class-2 neighbour is nearer (as scikit-learn)
    model = fitted(points([[4], [7]], [2, 1]), k=2)
    assert model(queries([[5]])).argmax(1).item() == 1


def test_distance_weights_let_one_near_neighbour_outvote_two_far_ones():
    train = points([[11], [13], [7]], [1, 0, 0])
    assert fitted(train, k=3)(queries([[10]])).argmax(1).item() == 0  # two votes to one
    scores = fitted(train, k=3, weights="distance")(queries([[10]]))
    assert scores[0].tolist() == pytest.approx([0.4, 0.6, 0.0])  # 1/3 + 1/3 against 1/1
    assert scores.argmax(1).item() == 1


def test_neighbours_at_distance_zero_take_the_whole_distance_weighted_vote():
    model = fitted(points([[10], [11], [9]], [2, 0, 0]), k=3, weights="distance")
    assert model(queries([[10]])).tolist() == [[0.0, 0.0, 1.0]]
    tied = fitted(points([[10], [10], [11]], [2, 1, 0]), k=3, weights="distance")
    scores = tied(queries([[10]]))
    assert scores.tolist() == [[0.0, 0.5, 0.5]] and scores.argmax(1).item() == 1


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.distance=manhattan", "model.distance='manhattan' is unknown: use one of l2, l1, lp, cosine"),
        ("model.k=0", "model.k=0 is invalid"),
        ("model.k=[1,3,-1]", "model.k=[1, 3, -1] is invalid"),
        ("model.k=2.5", "model.k=2.5 is invalid"),
        ("model.weights=inverse", "model.weights='inverse' is unknown: use one of uniform, distance"),
        ("model.chunk_size=0", "model.chunk_size=0 is invalid"),
        ("model.normalize=yes", "model.normalize='yes' is invalid: use true or false"),
    ],
)
def test_bad_values_name_the_key_the_value_and_what_is_accepted(override, message):
    assert message in config_error(["model=knn", override])


@pytest.mark.parametrize(
    "options,message",
    [
        ({"distance": "lp"}, "model.p=null"),
        ({"distance": "lp", "p": 0.5}, "model.p=0.5"),
        ({"p": 3}, "model.p=3 is only used with model.distance=lp"),
        ({"pca": 4}, "model.pca=4"),
    ],
)
def test_values_that_depend_on_each_other_or_the_data_are_checked_by_the_model(options, message):
    with pytest.raises(UserError, match="use") as error:
        KNN((1, 1, 3), 3, **options)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_searching_before_fit_says_so():
    with pytest.raises(RuntimeError, match="call fit"):
        KNN((1, 1, 1), 3)(queries([[1]]))


def test_k_larger_than_the_training_split_is_a_user_error():
    model = KNN((1, 1, 1), 3, k=[1, 5])
    with pytest.raises(UserError, match=r"model.k=5 is more than the 4 training images: use values of k from 1 to 4"):
        model.fit(points([[1], [2], [3], [4]], [0, 1, 2, 0]))


# ---- one search for many k, chunking, preprocessing (synthetic data: always available) ------------------


@pytest.fixture(scope="module")
def synthetic():
    raw = Synthetic(train_size=1500, test_size=300).load()
    return make_splits(raw, torch.arange(1500), torch.arange(0), torch.device("cpu"))


@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_one_search_for_many_k_equals_separate_runs(synthetic, weights):
    images = as_matrix(synthetic.test)[:150].view(-1, 1, 28, 28)
    many = fitted(synthetic.train, 10, k=[9, 1, 5, 3, 7], weights=weights)
    assert many.ks == (1, 3, 5, 7, 9)
    by_k = many.scores_by_k(images)
    for k in (1, 3, 5, 7, 9):
        assert torch.equal(by_k[k], fitted(synthetic.train, 10, k=k, weights=weights)(images))


@pytest.mark.parametrize("distance", ["l2", "l1", "cosine"])
def test_chunk_size_does_not_change_the_answer(synthetic, distance):
    images = as_matrix(synthetic.test)[:60].view(-1, 1, 28, 28)
    answers = [
        fitted(synthetic.train, 10, k=7, distance=distance, chunk_size=size).neighbours(images, 7)
        for size in (1, 13, 4096)
    ]
    for distances, indices in answers[1:]:
        assert torch.equal(indices, answers[0][1]) and torch.equal(distances, answers[0][0])


def test_standardization_and_pca_are_fitted_on_the_training_split_only(synthetic):
    model = fitted(points([[1] * 784, [9] * 784], [0, 1]), 10, normalize=True, pca=20)
    model.fit(synthetic.train)  # fitted again: nothing of the first fit may remain
    train = as_matrix(synthetic.train).double()
    assert torch.allclose(model.mean.double(), train.mean(0), atol=1e-5)
    std = train.std(0, correction=0)
    assert torch.allclose(model.scale.double(), torch.where(std > 0, std, 1.0), rtol=1e-4)
    # the PCA axes are the top 20 principal axes of the standardized training images, in any sign
    standardized = (train - train.mean(0)) / model.scale.double()
    _, vectors = np.linalg.eigh(standardized.numpy().T @ standardized.numpy())  # numpy's LAPACK, ascending
    axes = torch.from_numpy(vectors[:, -20:])
    ours = model.components.double()
    assert torch.allclose(ours.T @ ours, torch.eye(20, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(ours @ ours.T, axes @ axes.T, atol=1e-3)
    # and the stored features are the training images through exactly that map
    assert torch.allclose(model.train_features.double(), standardized @ ours, atol=1e-3)


def test_preprocessing_matches_a_scikit_learn_pipeline(synthetic):
    x_train, x_test = as_matrix(synthetic.train).numpy(), as_matrix(synthetic.test).numpy()
    reference = make_pipeline(StandardScaler(), PCA(20, svd_solver="full"), KNeighborsClassifier(5, algorithm="brute"))
    expected = reference.fit(x_train, synthetic.train.labels.numpy()).predict(x_test)
    ours = fitted(synthetic.train, 10, k=5, normalize=True, pca=20)(
        torch.from_numpy(x_test).view(-1, 1, 28, 28)
    ).argmax(1)
    assert (ours.numpy() == expected).mean() >= 0.99  # two PCA solvers: axes equal to ~1e-6, not bit for bit


# ---- the exact integer search for 8-bit images -----------------------------------------------------


def brute_force(
    train: torch.Tensor, images: torch.Tensor, distance: str, p: float | None, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest of each image among train's rows, in float64 and in plain formulas: distances and
    indices, the lower training index first at equal distance."""
    train, images = train.double(), images.flatten(1).double()
    if distance == "cosine":  # 1 - <x, y> of the unit vectors given (a zero vector: 1), never below 0 (as scikit-learn)
        distances = (1 - images @ train.T).clamp_min(0)
    else:  # sums over |differences|^p, pair by pair: equal images get bit-equal distances
        distances = torch.cdist(
            images, train, p={"l1": 1, "l2": 2}.get(distance, p), compute_mode="donot_use_mm_for_euclid_dist"
        )
    order = distances.argsort(dim=1, stable=True)[:, :k]
    return distances.gather(1, order), order


def brute_force_votes(labels: torch.Tensor, distances: torch.Tensor, weights: str, num_classes: int) -> torch.Tensor:
    """The class each row of neighbours votes for: one vote each, or 1/distance (neighbours at distance 0,
    if any, take the whole vote); equal votes go to the lowest class."""
    votes = torch.zeros(len(labels), num_classes, dtype=torch.float64)
    for row, (classes, far) in enumerate(zip(labels.tolist(), distances.tolist())):
        for label, distance in zip(classes, far):
            if weights == "uniform":
                votes[row, label] += 1
            elif 0.0 in far:
                votes[row, label] += distance == 0.0
            else:
                votes[row, label] += 1 / distance
    return torch.tensor([max(range(num_classes), key=lambda c: (v[c], -c)) for v in votes.tolist()])


def colour_split(channel_scales: list[float], n: int = 400) -> DeviceSplit:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 4, 4), dtype=torch.uint8, generator=generator)
    images[n // 2 :] = images[: n // 2]  # duplicates: every query below has ties to settle
    scale = torch.tensor(channel_scales).view(1, 3, 1, 1)
    return DeviceSplit(
        images, torch.randint(0, 3, (n,), generator=generator), scale, torch.tensor([-1.0, 0.5, 2.0]).view(1, 3, 1, 1)
    )


def pixel_brute_force(
    train: DeviceSplit, picked: torch.Tensor, distance: str, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """brute_force on the 8-bit pixels of train's images `picked` as queries, distances in normalized units
    (one scale)."""
    distances, indices = brute_force(train.images.flatten(1), train.images[picked], distance, None, k)
    return distances * train.scale.flatten()[0].double(), indices


@pytest.mark.parametrize("distance", ["l2", "l1"])
@pytest.mark.parametrize("scales,stored", [([0.02] * 3, torch.int8), ([0.02, 0.03, 0.05], torch.float32)])
def test_eight_bit_images_with_one_scale_are_searched_in_exact_integers(scales, stored, distance):
    train = colour_split(scales)
    model = fitted(train, k=[1, 4], distance=distance)
    assert model.train_features.dtype == stored  # per-channel scales weigh channels unequally: floats
    picked = torch.arange(0, 400, 7)
    queries_ = train.batch(picked)[0]  # 8-bit images normalized like the training split
    distances, indices = model.neighbours(queries_, 4)
    if stored == torch.int8:  # exact in the pixels: distinct images at equal integer distances keep the index order
        expected_distances, expected_indices = pixel_brute_force(train, picked, distance, 4)
    else:
        expected_distances, expected_indices = brute_force(as_matrix(train), queries_, distance, None, 4)
    assert torch.equal(indices, expected_indices)
    torch.testing.assert_close(distances, expected_distances, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("distance", ["l2", "l1"])
@pytest.mark.parametrize("fast_int_mm", [True, False])
def test_both_routes_to_exact_int8_products_find_the_brute_force_neighbours(monkeypatch, fast_int_mm, distance):
    # 3,072 features: the float32 route takes three pieces of 1,024. Pixels near 0 and 255 make codes
    # near -128 and 127, so an image's products with itself sum to about 3 x 2^24, past float32's
    # exact integers in one piece; the all-0 image puts each product at its extreme, 128^2.
    monkeypatch.setattr(patches, "cpu_has_vnni", lambda: fast_int_mm)
    generator = torch.Generator().manual_seed(1)
    bright = torch.rand(300, 3, 32, 32, generator=generator) < 0.5
    images = torch.randint(0, 12, (300, 3, 32, 32), dtype=torch.uint8, generator=generator) + bright * torch.tensor(
        244, dtype=torch.uint8
    )
    images[0], images[2] = 0, 0
    train = DeviceSplit(
        images,
        torch.randint(0, 3, (300,), generator=generator),
        torch.full((1, 3, 1, 1), 0.01),
        torch.zeros(1, 3, 1, 1),
    )
    model = fitted(train, k=3, distance=distance)
    assert model.train_features.dtype == torch.int8
    picked = torch.tensor([0, 1, 5, 77, 299])
    distances, indices = model.neighbours(train.batch(picked)[0], 3)
    expected_distances, expected_indices = pixel_brute_force(train, picked, distance, 3)
    assert torch.equal(indices, expected_indices) and indices[0, :2].tolist() == [0, 2]
    torch.testing.assert_close(distances, expected_distances, rtol=1e-9, atol=1e-9)


def test_integer_search_matches_the_float64_brute_force_on_real_sized_images(synthetic):
    model = fitted(synthetic.train, 10, k=7, chunk_size=64)
    assert model.train_features.dtype == torch.int8
    images = synthetic.test.batch(torch.arange(200))[0]
    distances, indices = model.neighbours(images, 7)
    expected_distances, expected_indices = brute_force(as_matrix(synthetic.train), images, "l2", None, 7)
    assert torch.equal(indices, expected_indices)
    torch.testing.assert_close(distances, expected_distances, rtol=1e-6, atol=1e-9)


def test_queries_that_are_not_eight_bit_images_are_searched_in_float():
    model = fitted(points([[0], [10], [3], [7], [20]], [0, 1, 0, 1, 2]), k=2)
    distances, indices = model.neighbours(queries([[4.5], [8.75]]), 2)  # between pixel values
    assert indices.tolist() == [[2, 3], [1, 3]]
    torch.testing.assert_close(distances, torch.tensor([[1.5, 2.5], [1.25, 1.75]], dtype=torch.float64))
    assert model(queries([[4.5]])).argmax(1).item() == 0  # one vote each: the lower class wins
    assert list(model.state_dict()) == list(fitted(points([[0], [10]], [0, 1])).state_dict())  # no float copy saved


def test_l1_queries_that_are_not_eight_bit_images_are_searched_by_l1_in_float():
    model = fitted(points([[3, 3], [5, 0]], [0, 1]), distance="l1")
    distances, indices = model.neighbours(queries([[1.5, 0.25]]), 2)
    assert indices.tolist() == [[1, 0]]  # by L2 the order would be [0, 1]
    torch.testing.assert_close(distances, torch.tensor([[3.75, 4.25]], dtype=torch.float64))


@pytest.mark.parametrize(
    "distance,scales,vnni,route",
    [
        ("l2", [0.02] * 3, True, IntegerL2),
        ("l2", [0.02] * 3, False, PrunedL2),
        ("l1", [0.02] * 3, True, PrunedL1),
        ("l1", [0.02] * 3, False, PrunedL1),
        ("l2", [0.02, 0.03, 0.05], True, FloatSearch),
        ("cosine", [0.02] * 3, True, FloatSearch),
    ],
)
def test_the_route_is_chosen_at_fit_and_again_from_a_checkpoint(monkeypatch, distance, scales, vnni, route):
    monkeypatch.setattr(patches, "cpu_has_vnni", lambda: vnni)
    train = colour_split(scales)
    model = fitted(train, k=3, distance=distance)
    assert type(model.search) is route
    restored = KNN((3, 4, 4), 3, k=3, distance=distance)
    restored.load_state_dict(model.state_dict())
    assert type(restored.search) is route and restored.search.features is restored.train_features
    queries_ = train.batch(torch.arange(0, 400, 9))[0]
    search = model.search
    assert torch.equal(restored(queries_), model(queries_))
    assert model.search is search  # kept from one search to the next, with whatever it made on first need


def test_a_loaded_checkpoint_replaces_what_the_search_kept_of_the_split_before(monkeypatch):
    monkeypatch.setattr(patches, "cpu_has_vnni", lambda: False)  # PrunedL2 keeps float codes and projections
    first = colour_split([0.02] * 3)
    second = DeviceSplit(first.images.flip(0).contiguous(), first.labels, first.scale, first.shift)
    model, other = fitted(first, k=3), fitted(second, k=3)
    queries_ = first.batch(torch.arange(0, 400, 9))[0]
    model(queries_)  # the search makes its float32 copies of the codes
    model.load_state_dict(other.state_dict())
    assert torch.equal(model.neighbours(queries_, 3)[1], other.neighbours(queries_, 3)[1])


def test_an_integer_model_survives_its_state_dict(synthetic):
    model = fitted(synthetic.train, 10, k=[1, 3])
    model.k = 3
    restored = KNN((1, 28, 28), 10, k=[1, 3])
    restored.load_state_dict(model.state_dict())
    images = synthetic.test.batch(torch.arange(100))[0]
    assert restored.k == 3 and restored.train_features.dtype == torch.int8
    assert torch.equal(restored(images), model(images))


# ---- every distance against an independent float64 brute force, ties included ---------------------------


@pytest.fixture(scope="module")
def mnist_with_duplicates():
    """2,500 MNIST training images twice over (every neighbour has a twin at the same distance, one index
    2,500 further), and queries: 300 test images and 40 of the training images themselves (at distance 0)."""
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip(
            f"real MNIST not available: {SHARED_DATA / 'MNIST' / 'raw'} is absent (it lives in the workplace's "
            "shared/ folder)"
        )
    raw = MNIST(root=str(SHARED_DATA), download=False).load()
    twice = torch.cat([torch.arange(2500), torch.arange(2500)])
    subset = RawData(
        LabeledImages(raw.train.images[twice], raw.train.labels[twice]),
        LabeledImages(raw.test.images[:300], raw.test.labels[:300]),
        raw.classes,
    )
    splits = make_splits(subset, torch.arange(5000), torch.arange(0), torch.device("cpu"))
    queries_ = torch.cat([splits.test.batch(torch.arange(300))[0], splits.train.batch(torch.arange(0, 2000, 50))[0]])
    return splits.train, queries_


@pytest.mark.parametrize(
    "distance,p,weights,k,normalize,searched_as",
    [
        ("l2", None, "uniform", 3, False, torch.int8),
        ("l2", None, "distance", 4, False, torch.int8),
        ("l1", None, "uniform", 3, False, torch.int8),
        ("l1", None, "distance", 4, False, torch.int8),
        ("l1", None, "uniform", 3, True, torch.float32),
        ("l2", None, "uniform", 3, True, torch.float32),
        ("cosine", None, "distance", 4, False, torch.float32),
        ("cosine", None, "uniform", 3, False, torch.float32),
        ("lp", 3, "uniform", 3, False, torch.float32),
    ],
)
def test_every_distance_finds_the_float64_brute_force_neighbours_index_for_index(
    mnist_with_duplicates, distance, p, weights, k, normalize, searched_as
):
    train, images = mnist_with_duplicates
    images = images[::4] if distance == "lp" else images  # cdist's powers are slow: 85 queries
    model = fitted(train, 10, k=k, distance=distance, p=p, weights=weights, normalize=normalize)
    assert model.train_features.dtype == searched_as
    if searched_as == torch.int8:  # the 8-bit pixels themselves: exact, distances in the normalized units
        scale, shift = train.scale.flatten()[0].double(), train.shift.flatten()[0].double()
        pixels = [((x.flatten(1).double() - shift) / scale).round() for x in (as_matrix(train), images)]
        expected_distances, expected_indices = brute_force(*pixels, distance, p, k)
        expected_distances = expected_distances * scale
    else:  # the features the model measures (normalized, standardized or unit vectors: float32), in float64
        expected_distances, expected_indices = brute_force(model.train_features, model.vectors(images), distance, p, k)
        if distance == "cosine":
            # unit vectors, so 1 - <x, y> is 1 - cos
            torch.testing.assert_close(model.train_features.norm(dim=1), torch.ones(len(train)))
    distances, indices = model.neighbours(images, k)
    assert torch.equal(indices, expected_indices)
    torch.testing.assert_close(distances, expected_distances, rtol=1e-9, atol=1e-9)
    assert (indices[:, 1] == indices[:, 0] + 2500).double().mean() > 0.9  # ties: the nearest image, then its twin
    expected_votes = brute_force_votes(train.labels[expected_indices], expected_distances, weights, 10)
    assert torch.equal(model(images).argmax(1), expected_votes)


@pytest.mark.parametrize("distance", ["l2", "l1"])
def test_without_vnni_only_the_images_a_bound_cannot_rule_out_are_measured_exactly(
    monkeypatch, mnist_with_duplicates, distance
):
    # L2's bound (64 principal axes) and L1's (L2^2 / 255) must leave few images per query to measure,
    # or the pruned search is a brute force with extra steps; the answer stays the brute force's.
    monkeypatch.setattr(patches, "cpu_has_vnni", lambda: False)
    train, images = mnist_with_duplicates
    measured = []
    nearest_among = PixelCodes.nearest_among

    def counting(self, queries_, rows, candidates, k, exact):
        measured.append(len(rows))
        return nearest_among(self, queries_, rows, candidates, k, exact)

    monkeypatch.setattr(PixelCodes, "nearest_among", counting)
    model = fitted(train, 10, k=3, distance=distance)
    assert isinstance(model.search, {"l2": PrunedL2, "l1": PrunedL1}[distance])
    distances, indices = model.neighbours(images, 3)
    scale, shift = train.scale.flatten()[0].double(), train.shift.flatten()[0].double()
    pixels = [((x.flatten(1).double() - shift) / scale).round() for x in (as_matrix(train), images)]
    assert torch.equal(indices, brute_force(*pixels, distance, None, 3)[1])
    assert sum(measured) < 0.05 * len(images) * len(train)


# ---- the real command ----------------------------------------------------------------------------


def test_vl_train_model_knn_writes_the_same_run_directory_as_trained_models(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(["model=knn", "model.k=[1,3,5]", *TINY], run_dir)
    assert result.returncode == 0, result.stderr

    metrics = read_metrics(run_dir)
    assert all(metrics[key] is None for key in ("train/loss", "val/loss", "test/loss"))
    assert {"val/acc@1", "val/acc@3", "val/acc@5"} <= metrics.keys()
    assert metrics["best_k"] in (1, 3, 5)
    assert (
        metrics["val/acc"] == metrics[f"val/acc@{metrics['best_k']}"] == max(metrics[f"val/acc@{k}"] for k in (1, 3, 5))
    )
    assert 0.3 < metrics["test/acc"] <= 1.0 and metrics["status"] == "completed"

    log_text = (run_dir / "train.log").read_text()
    assert "loss, optimizer and scheduler are not used" in log_text
    assert "MiB of scratch memory" in log_text and f"best k {metrics['best_k']}" in log_text
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert {"val/acc@1", "val/acc@3", "val/acc@5", "val/acc", "test/acc"} <= set(events.Tags()["scalars"])


def test_vl_train_rejects_a_bad_knn_value_in_one_line_with_exit_code_2(tmp_path):
    result = run_cli(["model=knn", "model.distance=manhattan", *TINY], tmp_path / "run")
    assert result.returncode == 2
    assert "model.distance='manhattan' is unknown: use one of l2, l1, lp, cosine" in result.stderr
    assert "Traceback" not in result.stderr
