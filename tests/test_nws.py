"""Neural Weight Search: the layer, the pools, the storage, the splits (SPEC-nws.md)."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from models.nws import (NetworkConfig, NWSConv2d, NWSLinear, assign_all, build_network, commitment_loss,
                        nws_layers, search_all)
from utils import ConfigError


def brute_force_weight(weight: torch.Tensor, pool: torch.Tensor, group_size: int) -> torch.Tensor:
    """Each group of ``weight`` replaced by its nearest pool vector, one vector at a time (float64)."""
    out_channels, in_channels = weight.shape[:2]
    spacing = in_channels // group_size
    expected = torch.empty_like(weight)
    for o, j in itertools.product(range(out_channels), range(spacing)):
        channels = [j + g * spacing for g in range(group_size)]  # gs input channels, in/gs apart
        vector = torch.cat([weight[o, c].reshape(-1) for c in channels]).double()
        distances = [float(((vector - p.double()) ** 2).sum()) for p in pool]
        nearest = pool[min(range(len(distances)), key=distances.__getitem__)]
        for g, c in enumerate(channels):
            expected[o, c] = nearest.reshape(group_size, -1)[g].reshape(weight.shape[2:])
    return expected


@pytest.mark.parametrize("group_size", [1, 2, 4])
def test_conv_forward_uses_exactly_the_nearest_pool_vector_of_each_group(group_size):
    torch.manual_seed(0)
    layer = NWSConv2d(4, 3, 3, padding=1, group_size=group_size, pool_size=7)
    x = torch.randn(2, 4, 5, 5)
    expected = brute_force_weight(layer.weight.detach(), layer.pool, group_size)
    for training in (True, False):
        layer.train(training)
        assert torch.equal(layer(x), F.conv2d(x, expected, padding=1))


@pytest.mark.parametrize("group_size", [1, 3])
def test_linear_head_uses_exactly_the_nearest_pool_vector(group_size):
    torch.manual_seed(1)
    layer = NWSLinear(6, 4, group_size=group_size, pool_size=5)
    x = torch.randn(3, 6)
    expected = brute_force_weight(layer.weight.detach(), layer.pool, group_size)
    assert torch.equal(layer(x), F.linear(x, expected))


@pytest.mark.parametrize("kernel, group_size, equal_entries", [(3, 2, False), (3, 1, True), (1, 1, True)],
                         ids=["3x3 gs 2", "3x3 pool with 6 equal entries", "1x1 scalar pool"])
def test_training_forwards_keep_using_exactly_the_nearest_vectors_while_weights_move(kernel, group_size,
                                                                                   equal_entries):
    """The bounded search re-searches only rows that may have moved: it must agree with brute force."""
    torch.manual_seed(8)
    layer = NWSConv2d(8, 16, kernel, padding=kernel // 2, group_size=group_size, pool_size=32)
    if equal_entries:  # ties go to the lowest index, also when they outnumber the kept candidates
        with torch.no_grad():
            layer.pool[5:11] = layer.pool[5]
            layer.weight.view(-1, layer.pool.shape[1])[:20] = layer.pool[5] + 0.01
    x = torch.randn(1, 8, 4, 4)
    for step in range(13):
        with torch.no_grad():  # small steps (most rows keep their bound) and a few large jumps
            layer.weight.add_(torch.randn_like(layer.weight) * (0.3 if step % 4 == 3 else 0.01))
        searched = layer._search.rows_searched
        expected = brute_force_weight(layer.weight.detach(), layer.pool, group_size)
        assert torch.equal(layer(x), F.conv2d(x, expected, padding=kernel // 2)), step
    # the bounds were in use: rows that kept their bound were not searched again at the last step
    assert layer._search.rows_searched - searched < layer.num_vectors


def test_nearest_candidates_are_the_nearest_entries_and_bound_every_other_one():
    from models.nws_search import nearest_candidates, nearest_indices

    torch.manual_seed(9)
    pool = torch.randn(40, 9)
    pool[10:17] = pool[3]  # 8 equal entries: more than the candidates and the bound's entry
    vectors = torch.cat([torch.randn(300, 9), pool[3] + 0.01 * torch.randn(5, 9), pool[3:4]])
    nearest, candidates, bounds = nearest_candidates(vectors, pool, 4)
    distances = torch.cdist(vectors.double(), pool.double())
    assert torch.equal(nearest, nearest_indices(vectors, pool))
    assert torch.equal(nearest[-6:], torch.full((6,), 3))  # the lowest index among equal entries
    kth = distances.sort(1).values[:, 3]
    assert (distances.gather(1, candidates) <= kth.unsqueeze(1)).all()  # the 4 nearest, in some order of ties
    others = distances.scatter(1, candidates, math.inf)
    assert (bounds[:, 1].double() <= others.amin(1)).all()  # beyond the candidates
    first_excluded = distances.scatter(1, candidates[:, :1], math.inf)
    assert (bounds[:, 0].double() <= first_excluded.amin(1)).all()  # every entry but the first candidate


def test_a_vector_moving_to_a_runner_up_candidate_needs_no_new_search():
    from models.nws_search import BoundedSearch

    far = [[10.0, 10.0], [10.0, -10.0], [-10.0, 10.0], [-10.0, -10.0], [20.0, 0.0], [0.0, 20.0]]
    pool = torch.tensor([[0.0, 0.0], [1.0, 0.0]] + far)
    search = BoundedSearch()
    for _ in range(2):  # a plain search, then the bounds are built
        indices, _ = search(torch.tensor([[0.45, 0.0]]), pool)
    assert indices.tolist() == [0] and search.rows_searched == 2
    indices, chosen = search(torch.tensor([[0.55, 0.0]]), pool)  # now nearer to entry 1, a candidate
    assert indices.tolist() == [1] and torch.equal(chosen, pool[1:2])
    assert search.rows_searched == 2  # decided by the candidates and the bound beyond them
    indices, _ = search(torch.tensor([[19.0, 1.0]]), pool)  # far beyond the bound: searched again
    assert indices.tolist() == [6] and search.rows_searched == 3


def test_network_searches_ahead_by_groups_of_layers_and_a_weight_changed_since_is_searched_again():
    torch.manual_seed(10)
    model = build_network(NetworkConfig("wrn", 3, (4, 4, 8, 16), depth=10, pool_size=16))
    layers = nws_layers(model)
    calls, ready = [], []
    for name, layer in layers.items():
        search = layer._search
        layer._search = lambda vectors, pool, search=search, name=name: calls.append(name) or search(vectors, pool)
    first = next(iter(layers.values()))
    first.register_forward_pre_hook(
        lambda module, inputs: ready.extend(name for name, layer in layers.items() if layer._searched_ahead))
    model(torch.randn(2, 3, 16, 16))
    assert ready == list(layers) and calls == []  # all searched before the first convolution, none alone
    # one search for the 3x3 convolutions, one for the 1x1 ones and the classifier (scalar pools)
    scalar = [name for name, layer in layers.items() if layer.pool.shape[1] == 1]
    assert sorted(model._nws_searches, key=len) == [tuple(scalar), tuple(n for n in layers if n not in scalar)]
    first.search_ahead()
    with torch.no_grad():
        first.weight.mul_(-1.5)  # changed after the search ahead: that result must not be used
    x = torch.randn(2, 3, 16, 16)
    expected = F.conv2d(x, brute_force_weight(first.weight.detach(), first.pool, 1), padding=1)
    assert torch.equal(first(x), expected)


@pytest.mark.parametrize("group_size", [1, 2])
def test_a_network_searched_by_groups_uses_exactly_the_nearest_vectors_while_weights_move(group_size):
    """Layers searched together, each in its own pool, agree with brute force layer by layer, step after step."""
    from models.nws import rows_searched

    torch.manual_seed(11)
    model = build_network(NetworkConfig("wrn", 3, (4, 4, 8, 16), depth=10, group_size=group_size, pool_size=16))
    layers = nws_layers(model)
    x = torch.randn(2, 3, 8, 8)
    for step in range(8):
        with torch.no_grad():  # small steps (most rows keep their bound) and a few large jumps
            for layer in layers.values():
                layer.weight.add_(torch.randn_like(layer.weight) * layer.weight.std() * (1.0 if step % 4 == 3 else 0.05))
        searched = rows_searched(model)
        model(x)
        for name, layer in layers.items():
            expected = brute_force_weight(layer.weight.detach(), layer.pool, layer.group_size)
            assert torch.equal(layer.weight_from_indices(layer.last_indices), expected), (step, name)
    assert len(model._nws_searches) == (2 if group_size == 1 else 3)  # gs 2: the input conv is alone
    assert rows_searched(model) - searched < sum(layer.num_vectors for layer in layers.values())


def test_scalar_pools_use_the_nearest_entry_and_the_lowest_index_among_equals():
    from models.nws_search import nearest_indices

    pool = torch.tensor([[0.5], [-1.0], [0.5], [2.0], [-1.0], [0.0]])
    values = torch.tensor([[0.5], [0.4], [0.25], [-0.75], [-5.0], [9.0], [1.25], [0.1], [-0.5]])
    brute = ((values - pool.T).abs()).argmin(1)  # argmin: first of equal minima
    assert nearest_indices(values, pool).tolist() == brute.tolist() == [0, 0, 0, 1, 1, 3, 0, 5, 1]


def test_straight_through_gradient_reaches_the_temporary_weight_and_the_pool_gets_none():
    torch.manual_seed(2)
    layer = NWSConv2d(4, 6, 3, padding=1, group_size=2, pool_size=9)
    pool_before = layer.pool.clone()
    x = torch.randn(2, 4, 6, 6)
    upstream = torch.randn(2, 6, 6, 6)
    (layer(x) * upstream).sum().backward()
    # STE: the temporary weight gets exactly the gradient the searched weight would get.
    searched = layer.weight_from_indices(layer.search()).requires_grad_()
    (F.conv2d(x, searched, padding=1) * upstream).sum().backward()
    assert torch.allclose(layer.weight.grad, searched.grad, rtol=1e-5, atol=1e-6)
    assert layer.weight.grad.abs().sum() > 0
    assert not layer.pool.requires_grad and layer.pool.grad is None
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9).step()
    assert torch.equal(layer.pool, pool_before)


@pytest.mark.parametrize("group_size", [1, 2])
def test_the_commitment_gradient_is_that_of_the_mean_squared_error_added_to_the_straight_through_one(group_size):
    torch.manual_seed(12)
    layer = NWSConv2d(4, 6, 3, padding=1, group_size=group_size, pool_size=9)
    x, upstream, beta = torch.randn(2, 4, 6, 6), torch.randn(2, 6, 6, 6), 0.7
    ((layer(x) * upstream).sum() + beta * layer.commitment).backward()
    searched = layer.weight_from_indices(layer.search()).requires_grad_()
    (F.conv2d(x, searched, padding=1) * upstream).sum().backward()
    weight = layer.weight.detach().clone().requires_grad_()
    (beta * F.mse_loss(weight, searched.detach())).backward()
    assert torch.allclose(layer.weight.grad, searched.grad + weight.grad, rtol=1e-5, atol=1e-7)
    assert torch.allclose(layer.commitment, F.mse_loss(weight, searched.detach()))


@pytest.mark.parametrize("config", [
    NetworkConfig("resnet18", 5, (4, 8, 8, 16), pool_size=16),
    NetworkConfig("wrn", 5, (4, 4, 8, 16), depth=10, pool_size=16),
])
def test_commitment_is_nonzero_and_enters_the_loss_for_every_nws_layer(config):
    torch.manual_seed(3)
    model = build_network(config)
    plain = build_network(NetworkConfig.from_dict({**config.to_dict(), "nws": False}))
    # Every conv and the classifier of the plain twin is an NWS layer here (the published code
    # missed the ResNet's convs, so their commitment term was silently 0).
    weighted = [m for m in plain.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    layers = nws_layers(model)
    assert len(layers) == len(weighted)
    model(torch.randn(4, 3, 16, 16))
    total = commitment_loss(model)
    for name, layer in layers.items():
        assert layer.commitment > 0, name
        expected = ((layer.weight_from_indices(layer.last_indices) - layer.weight) ** 2).mean()
        assert torch.allclose(layer.commitment, expected)
    grads = torch.autograd.grad(total, [layer.weight for layer in layers.values()])
    assert all(g.abs().sum() > 0 for g in grads)
    assert torch.allclose(total, sum(layer.commitment for layer in layers.values()))


def test_evaluation_rebuilds_the_weight_once_and_uses_the_assigned_indices():
    torch.manual_seed(4)
    layer = NWSConv2d(4, 3, 3, padding=1, pool_size=6).eval()
    x = torch.randn(1, 4, 5, 5)
    first = layer(x)
    cached = layer._eval_cache[1]
    layer(x)
    assert layer._eval_cache[1] is cached  # no second search
    # Assigned indices win even when another entry is as near (here: a duplicated pool entry).
    with torch.no_grad():
        layer.pool[5] = layer.pool[0]
    indices = torch.full((layer.num_vectors,), 5)
    layer.assign(indices)
    assert torch.equal(layer.indices(), indices)
    assert torch.equal(layer(x), F.conv2d(x, layer.pool[5].reshape(1, 1, 3, 3).expand(3, 4, 3, 3), padding=1))
    assert not torch.equal(layer(x), first)


def test_search_and_assign_rebuild_the_network_exactly():
    torch.manual_seed(5)
    config = NetworkConfig("resnet18", 3, (4, 4, 8, 8), pool_size=8)
    trained, rebuilt = build_network(config), build_network(config)
    rebuilt.load_state_dict(trained.state_dict())
    x = torch.randn(2, 3, 16, 16)
    trained.eval()
    with torch.no_grad():
        for layer in nws_layers(rebuilt).values():
            layer.weight.normal_()  # the temporary weights are lost: only the indices count
    assign_all(rebuilt, search_all(trained))
    rebuilt.eval()
    assert torch.equal(trained(x), rebuilt(x))


def test_group_size_must_divide_the_input_channels_and_pools_need_two_vectors():
    with pytest.raises(ConfigError, match="--gs 3 must divide"):
        build_network(NetworkConfig("resnet18", 5, (4, 8, 8, 16), group_size=3))
    with pytest.raises(ConfigError, match="--n_emb must be at least 2"):
        NWSConv2d(4, 4, 3, pool_size=1)
    build_network(NetworkConfig("resnet18", 5, (4, 8, 8, 16), group_size=4))  # the 3-channel input conv uses gs 1


# --------------------------------------------------------------------------- pools (EMA k-means)


def test_ema_kmeans_step_matches_a_hand_computed_step():
    from models.nws_search import nearest_indices
    from weight_search.pools import ema_kmeans_step

    pool = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    vectors = torch.tensor([[1.0, 1.0], [3.0, 1.0], [9.0, 1.0], [1.0, -1.0]])
    indices = nearest_indices(vectors, pool)
    assert indices.tolist() == [0, 0, 1, 0]
    cluster_size, embed_avg = torch.ones(3), pool.clone()  # the initial EMA state
    ema_kmeans_step(pool, cluster_size, embed_avg, vectors, indices, decay=0.99, eps=1e-5)
    # counts = (3, 1, 0), sums = ((5, 1), (9, 1), (0, 0))
    # cluster_size = 0.99 * 1 + 0.01 * counts = (1.02, 1.00, 0.99)
    # embed_avg = 0.99 * pool + 0.01 * sums = ((0.05, 0.01), (9.99, 0.01), (0, 9.9))
    # n = 3.01; smoothed = (cluster_size + 1e-5) / (3.01 + 3e-5) * 3.01
    #   = (1.01999983, 1.00000003, 0.99000013); pool = embed_avg / smoothed
    assert torch.allclose(cluster_size, torch.tensor([1.02, 1.00, 0.99]))
    assert torch.allclose(embed_avg, torch.tensor([[0.05, 0.01], [9.99, 0.01], [0.0, 9.9]]))
    expected = torch.tensor([[0.04901962, 0.00980392], [9.98999967, 0.01], [0.0, 9.99999866]])
    assert torch.allclose(pool, expected, rtol=1e-6, atol=1e-8)


def test_pool_learner_updates_pools_after_training_forwards_only():
    from weight_search.pools import PoolLearner, ema_kmeans_step

    torch.manual_seed(6)
    model = build_network(NetworkConfig("resnet18", 3, (4, 4, 8, 8), pool_size=8))
    learner = PoolLearner(model)
    layer = nws_layers(model)["layer2.0.conv1"]
    pool, cluster_size, embed_avg = layer.pool.clone(), torch.ones(8), layer.pool.clone()
    vectors = layer.vectors().detach().clone()
    x = torch.randn(2, 3, 8, 8)
    model.eval()(x)
    assert torch.equal(layer.pool, pool)
    model.train()(x)
    ema_kmeans_step(pool, cluster_size, embed_avg, vectors, layer.last_indices)
    assert torch.equal(layer.pool, pool) and not torch.equal(layer.pool, embed_avg)
    learner.remove()
    model(x)
    assert torch.equal(layer.pool, pool)


def test_search_and_kmeans_run_in_fp32_on_half_precision_inputs():
    """fp16 squares overflow above 255: the published code's pool pretraining went NaN."""
    from models.nws_search import nearest_indices
    from weight_search.pools import ema_kmeans_step

    torch.manual_seed(7)
    pool = torch.randn(16, 9) * 300
    vectors = (pool[torch.arange(40) % 16] + torch.randn(40, 9)).half()
    indices = nearest_indices(vectors, pool.half())
    assert indices.tolist() == (torch.arange(40) % 16).tolist()
    cluster_size, embed_avg = torch.ones(16), pool.clone()
    ema_kmeans_step(pool, cluster_size, embed_avg, vectors, indices)
    assert pool.dtype == torch.float32 and torch.isfinite(pool).all()


# --------------------------------------------------------------------------- storage


@pytest.mark.parametrize("pool_size", [2, 5, 300, 512, 1000])
def test_pack_lzma_unpack_round_trips_the_indices_exactly(pool_size):
    from weight_search.storage import compress_indices, decompress_indices, index_bits, pack_indices

    generator = torch.Generator().manual_seed(pool_size)
    indices = {"a": torch.randint(pool_size, (1001,), generator=generator),
               "b": torch.tensor([0, pool_size - 1, pool_size - 1]),
               "c": torch.randint(pool_size, (13,), generator=generator)}
    bits = index_bits(pool_size)
    assert 2 ** (bits - 1) < pool_size <= 2 ** bits
    assert len(pack_indices(indices["a"], bits)) == -(-1001 * bits // 8)
    blob, counts, stored_bits = compress_indices(indices, pool_size)
    restored = decompress_indices(blob, counts, stored_bits)
    assert list(restored) == ["a", "b", "c"]
    for name in indices:
        assert torch.equal(restored[name], indices[name])


def test_indices_are_packed_least_significant_bit_first():
    from weight_search.storage import pack_indices, unpack_indices

    # 5 = 101, 3 = 011 -> stream 1,0,1, 1,1,0 -> byte 0b011101 = 29
    assert pack_indices(torch.tensor([5, 3]), 3) == bytes([29])
    assert unpack_indices(bytes([29]), 3, 2).tolist() == [5, 3]
    with pytest.raises(ValueError):
        pack_indices(torch.tensor([8]), 3)


def test_task_file_loads_with_weights_only(tmp_path):
    from training.checkpoint import save_checkpoint
    from weight_search.storage import as_byte_tensor, compress_indices, read_task, task_path

    blob, counts, bits = compress_indices({"conv": torch.arange(10) % 7}, 7)
    save_checkpoint({"kind": "nws_task", "task": 3, "index_counts": counts, "index_bits": bits,
                     "indices_lzma": as_byte_tensor(blob)}, task_path(str(tmp_path), 3))
    raw = torch.load(tmp_path / "task_03.pth", map_location="cpu", weights_only=True)
    assert bytes(raw["indices_lzma"].numpy()) == blob
    assert read_task(str(tmp_path), 3)["index_counts"] == {"conv": 10}


# --------------------------------------------------------------------------- splits


def write_small_cifar100(root, per_class_train=2, per_class_test=1):
    """CIFAR-100 python pickles with few images; pixel (0, 0) encodes the fine label.

    The meta file lists the superclasses in reverse order, so a reader that trusted the coarse
    label ids instead of their names would put the wrong classes in each task.
    """
    import pickle

    import numpy as np

    from weight_search.splits import CIFAR100_SUPERCLASSES

    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    names = list(reversed(CIFAR100_SUPERCLASSES))
    order = torch.randperm(100, generator=torch.Generator().manual_seed(0)).tolist()
    coarse_of = {fine: order.index(fine) // 5 for fine in range(100)}  # 5 fine classes per superclass
    for part, count in (("train", per_class_train), ("test", per_class_test)):
        fine = [f for f in range(100) for _ in range(count)]
        images = np.zeros((len(fine), 3, 32, 32), dtype=np.uint8)
        images[:, 0, 0, 0] = fine
        entry = {"data": images.reshape(len(fine), -1), "fine_labels": fine,
                 "coarse_labels": [coarse_of[f] for f in fine]}
        with open(folder / part, "wb") as handle:
            pickle.dump(entry, handle)
    with open(folder / "meta", "wb") as handle:
        pickle.dump({"fine_label_names": [f"class_{f}" for f in range(100)], "coarse_label_names": names}, handle)
    return coarse_of, names


def test_split_cifar100_has_20_superclass_tasks_in_spec_order(tmp_path):
    from weight_search.splits import CIFAR100_SUPERCLASSES, load_split

    coarse_of, names = write_small_cifar100(tmp_path)
    tasks = load_split("cifar100", str(tmp_path))
    assert [t.task.name for t in tasks] == list(CIFAR100_SUPERCLASSES)
    seen = set()
    for task_data in tasks:
        task = task_data.task
        assert len(task.classes) == 5 and list(task.classes) == sorted(task.classes)
        assert all(names[coarse_of[f]] == task.name for f in task.classes)
        seen.update(task.classes)
        assert len(task_data.train) == 10 and len(task_data.test) == 5
        assert sorted(task_data.train.targets) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
        image, label = task_data.test[3]
        assert image.shape == (3, 32, 32)
        # the image is that of fine class classes[label]
        assert task_data.test.base.images[task_data.test.indices[3], 0, 0, 0] == task.classes[label]
    assert seen == set(range(100))


def test_split_cifar100_missing_files_is_one_sentence(tmp_path):
    from weight_search.splits import load_split

    with pytest.raises(ConfigError, match="CIFAR-100 not found"):
        load_split("cifar100", str(tmp_path))


def test_split_fashion_has_5_tasks_of_2_classes():
    from weight_search.splits import load_split

    tasks = load_split("fashion_mnist", None, train_subset=10)
    assert [t.task.classes for t in tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert tasks[4].task.name == "bag, ankle boot"
    assert all(len(t.train) == 10 and len(t.test) == 2000 and set(t.test.targets) == {0, 1} for t in tasks)
    image, label = tasks[2].test[0]
    assert image.shape == (3, 32, 32) and label in (0, 1)


def test_split_digits_pairs_of_classes_and_balanced_subsets():
    from weight_search.splits import load_split

    full = load_split("digits", None)
    assert [t.task.classes for t in full] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert sum(len(t.train) for t in full) == 1437 and sum(len(t.test) for t in full) == 360
    assert all(set(t.train.targets) == {0, 1} for t in full)
    small = load_split("digits", None, train_subset=21)
    for task_data in small:
        assert len(task_data.train) == 21 and sorted(set(task_data.train.targets)) == [0, 1]
        assert task_data.train.targets.count(0) == 11
        assert len(task_data.test) == len(full[task_data.task.index].test)
