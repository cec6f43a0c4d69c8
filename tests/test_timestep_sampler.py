"""Timestep samplers of the diffusion core: uniform, and loss-aware importance sampling (its ring buffer, the
distribution it converges to, unbiased weights, its state in ``state_dict`` and across processes)."""

import io
import multiprocessing
import os

import pytest
import torch
import torch.distributed as dist

from recbole_diffusion.quick_start import launcher
from recbole_diffusion.diffusion import (
    LossAwareTimestepSampler, UniformTimestepSampler, make_timestep_sampler,
)


def warmed_sampler(profile, history=4, uniform_share=0.01):
    """A loss-aware sampler whose every step holds ``history`` copies of its loss in ``profile``."""
    sampler = LossAwareTimestepSampler(len(profile), history=history, uniform_share=uniform_share)
    steps = torch.arange(len(profile)).repeat(history)
    sampler.update(steps, profile[steps])
    return sampler


def test_uniform_sampler_has_unit_weights_and_no_state():
    sampler = make_timestep_sampler("uniform", 7)
    assert isinstance(sampler, UniformTimestepSampler) and sampler.state_dict() == {}
    torch.manual_seed(0)
    t, weights = sampler.sample(5000, "cpu")
    assert set(t.tolist()) == set(range(7)) and torch.equal(weights, torch.ones(5000))
    sampler.update(t, torch.rand(5000))  # nothing to learn


def test_update_is_a_ring_buffer_of_the_last_losses_of_each_step():
    """Batches with repeated steps, some repeated more often than the buffer holds, against a sequential loop."""
    steps, history = 5, 3
    sampler = LossAwareTimestepSampler(steps, history=history)
    buffer, counts = torch.zeros(steps, history, dtype=torch.float64), [0] * steps
    generator = torch.Generator().manual_seed(1)
    for size in (4, 11, 1, 9, 16):
        t = torch.randint(0, 3 if size == 11 else steps, (size,), generator=generator)  # 11 rows on 3 steps
        losses = torch.rand(size, generator=generator)
        sampler.update(t, losses)
        for step, loss in zip(t.tolist(), losses.tolist()):
            buffer[step, counts[step] % history] = loss
            counts[step] += 1
    torch.testing.assert_close(sampler.loss_history, buffer, rtol=0, atol=1e-7)  # float32 losses, float64 buffer
    assert sampler.loss_counts.tolist() == counts


def test_uniform_until_every_step_holds_its_history():
    sampler = LossAwareTimestepSampler(4, history=2, uniform_share=0.1)
    sampler.update(torch.tensor([0, 0, 1, 1, 2, 2, 3]), torch.tensor([9.0, 9.0, 1.0, 1.0, 1.0, 1.0, 1.0]))
    torch.testing.assert_close(sampler.probabilities(), torch.full((4,), 0.25, dtype=torch.float64))
    assert torch.equal(sampler.sample(10, "cpu")[1], torch.ones(10))
    sampler.update(torch.tensor([3]), torch.tensor([1.0]))
    expected = 0.9 * torch.tensor([9.0, 1.0, 1.0, 1.0], dtype=torch.float64) / 12 + 0.1 / 4
    torch.testing.assert_close(sampler.probabilities(), expected)


def test_sampling_distribution_converges_to_the_loss_profile_it_is_fed():
    """Closed loop, as in training: draw steps, feed back noisy losses whose second moment is the profile."""
    profile = torch.tensor([0.1, 0.5, 1.0, 2.0, 4.0, 0.4])
    share = 0.05
    sampler = LossAwareTimestepSampler(6, history=400, uniform_share=share)
    torch.manual_seed(2)
    for _ in range(60):
        t, _ = sampler.sample(512, "cpu")
        sampler.update(t, profile[t] * torch.randn(512).abs())  # E[loss^2] = profile^2
    target = ((1 - share) * profile / profile.sum() + share / 6).double()
    torch.testing.assert_close(sampler.probabilities(), target, rtol=0.12, atol=0)
    draws = 200_000
    t, _ = sampler.sample(draws, "cpu")
    frequencies = torch.bincount(t, minlength=6).double() / draws
    p = sampler.probabilities()
    assert torch.all((frequencies - p).abs() < 5 * (p * (1 - p) / draws).sqrt())


def test_a_changed_profile_replaces_the_old_one_after_history_losses_per_step():
    sampler = warmed_sampler(torch.tensor([1.0, 1.0, 1.0, 1.0]), history=3, uniform_share=1e-9)
    steps = torch.arange(4).repeat(3)
    sampler.update(steps, torch.tensor([1.0, 2.0, 3.0, 4.0])[steps])
    torch.testing.assert_close(sampler.probabilities(), torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64))


def test_weights_make_the_importance_sampled_loss_unbiased():
    losses = torch.tensor([0.2, 0.5, 1.0, 3.0, 0.05])
    sampler = warmed_sampler(losses, uniform_share=0.01)
    p = sampler.probabilities()
    assert p.max() / p.min() > 10  # far from uniform
    weights = sampler.sample(1, "cpu")[1]  # one draw, for its dtype
    assert weights.dtype == torch.float32
    exact = (p * (1 / (5 * p)) * losses.double()).sum()
    assert exact.item() == pytest.approx(losses.double().mean().item(), rel=1e-12)
    torch.manual_seed(3)
    draws = 400_000
    t, weights = sampler.sample(draws, "cpu")
    torch.testing.assert_close(weights, (1 / (5 * p[t])).float())
    estimate, unweighted = (weights * losses[t]).double(), losses[t].double()
    standard_error = estimate.std() / draws ** 0.5
    assert abs(estimate.mean() - losses.mean()) < 5 * standard_error
    assert unweighted.mean() > 2 * losses.mean()  # without the weights, far off


def test_state_round_trips_through_state_dict():
    sampler = warmed_sampler(torch.tensor([0.3, 1.0, 2.0]), history=2)
    sampler.update(torch.tensor([1, 2, 2]), torch.tensor([5.0, 0.1, 0.2]))
    assert set(sampler.state_dict()) == {"loss_history", "loss_counts"}
    stream = io.BytesIO()
    torch.save(sampler.state_dict(), stream)
    stream.seek(0)
    restored = LossAwareTimestepSampler(3, history=2, uniform_share=0.01)
    restored.load_state_dict(torch.load(stream, weights_only=True))
    assert torch.equal(restored.loss_history, sampler.loss_history)
    assert torch.equal(restored.loss_counts, sampler.loss_counts)
    torch.manual_seed(4)
    first = sampler.sample(100, "cpu")
    torch.manual_seed(4)
    second = restored.sample(100, "cpu")
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


@pytest.mark.parametrize("arguments,message", [
    (("importance", 10), "timestep_sampler='importance'"),
    (("loss_aware", 10, 0), "loss_aware_history=0"),
    (("loss_aware", 10, 2.5), "loss_aware_history=2.5"),
    (("loss_aware", 10, 10, 0.0), r"loss_aware_uniform_share=0.0: must lie in \(0, 1\]"),
])
def test_bad_sampler_arguments_name_the_key(arguments, message):
    with pytest.raises(ValueError, match=message):
        make_timestep_sampler(*arguments)


def _rank_batches(rank):
    """Rank-specific batches of different sizes (rank 0: 7 rows, rank 1: 4), as seen by the two processes."""
    generator = torch.Generator().manual_seed(10 + rank)
    size = 7 if rank == 0 else 4
    return [(torch.randint(0, 5, (size,), generator=generator), torch.rand(size, generator=generator))
            for _ in range(6)]


def _update_in_rank(rank, port, folder):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        sampler = LossAwareTimestepSampler(5, history=3)
        for t, losses in _rank_batches(rank):
            sampler.update(t, losses)
        torch.save(sampler.state_dict(), os.path.join(folder, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_processes_keep_the_same_state_as_one_fed_every_rows(tmp_path):
    """Each process updates with its own rows; the all-gather makes both equal one process fed both, in rank
    order (forked processes with gloo, so no import is paid again)."""
    port = launcher.free_port("127.0.0.1")
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_update_in_rank, args=(rank, port, str(tmp_path))) for rank in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [process.exitcode for process in processes] == [0, 0]
    states = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    single = LossAwareTimestepSampler(5, history=3)
    for (t0, l0), (t1, l1) in zip(_rank_batches(0), _rank_batches(1)):
        single.update(torch.cat([t0, t1]), torch.cat([l0, l1]))
    for state in states:
        assert torch.equal(state["loss_history"], single.loss_history)
        assert torch.equal(state["loss_counts"], single.loss_counts)
