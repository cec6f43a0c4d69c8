"""Evaluation noise keyed by (eval_seed, user, member, step): one checkpoint gives one set of metrics."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import stats

from recbole_diffusion.diffusion import KeyedNoise, keyed_normal
from recbole_diffusion.config.configurator import build_config
from recbole_diffusion.quick_start.quick_start import build_trainer, prepare_data, run
from conftest import FAST, TINY

EVALUATE_IN_A_NEW_PROCESS = """
import json, sys
from recbole_diffusion.config.configurator import build_config
from recbole_diffusion.quick_start.quick_start import build_trainer, prepare_data
config, model_class = build_config(sys.argv[1], sys.argv[4], config_dict=json.loads(sys.argv[2]))
data = prepare_data(config)
trainer = build_trainer(config, model_class, data.train)
print("RESULT " + json.dumps(dict(trainer.evaluate(data.test, load_best_model=True, model_file=sys.argv[3]))))
"""


def test_keyed_normal_is_standard_normal_and_uncorrelated():
    keys = torch.stack([torch.arange(2000), torch.zeros(2000, dtype=torch.long)], dim=1)
    draws = keyed_normal(7, keys, (64,)).double()
    flat = draws.flatten().numpy()
    assert abs(flat.mean()) < 4 / np.sqrt(flat.size) and abs(flat.std() - 1) < 0.01
    assert stats.kstest(flat, "norm").pvalue > 1e-3
    correlation = np.corrcoef(draws.numpy().T)  # 64 x 64 across 2,000 rows
    off_diagonal = correlation[~np.eye(64, dtype=bool)]
    assert np.abs(off_diagonal).max() < 5 / np.sqrt(2000)
    neighbours = np.corrcoef(draws[:-1].flatten().numpy(), draws[1:].flatten().numpy())[0, 1]
    assert abs(neighbours) < 5 / np.sqrt(flat.size)


def test_keyed_normal_depends_on_its_keys_only():
    keys = torch.tensor([[5, 0], [9, 1], [5, 0]])
    draws = keyed_normal(3, keys, (4, 2))
    assert draws.shape == (3, 4, 2)
    torch.testing.assert_close(draws[0], draws[2], rtol=0, atol=0)
    torch.testing.assert_close(keyed_normal(3, keys[1:2], (4, 2))[0], draws[1], rtol=0, atol=0)
    assert not torch.equal(keyed_normal(4, keys, (4, 2)), draws)  # another seed, other noise
    noise = KeyedNoise(3, keys)
    assert not torch.equal(noise.normal(noise.START, 1, (8,)), noise.normal(noise.DDPM, 1, (8,)))
    assert not torch.equal(noise.normal(noise.DDPM, 1, (8,)), noise.normal(noise.DDPM, 2, (8,)))


@pytest.mark.parametrize("model", ["DiffuRec", "PreferDiff"])
def test_scores_do_not_depend_on_the_batch_a_user_falls_in(prepared_models, model):
    recommender, batch = prepared_models[model]
    torch.manual_seed(0)
    whole = recommender.full_sort_predict(batch)
    torch.manual_seed(1)  # torch's RNG state plays no part
    halves = torch.cat([recommender.full_sort_predict(batch[torch.arange(0, 3)]),
                        recommender.full_sort_predict(batch[torch.arange(3, len(batch))])])
    # Equal up to float rounding of batched matrix products (kernels may differ with the batch size and
    # threads; guidance w = 8 amplifies that rounding); independent noise would differ at the scores' own scale.
    scale = whole.abs().max().item()
    torch.testing.assert_close(whole, halves, rtol=1e-4, atol=1e-4 * scale)


@pytest.fixture(scope="module")
def prepared_models(data_root):
    out = {}
    for model in ("DiffuRec", "PreferDiff"):
        config, model_class = build_config(model, "ml-100k-tiny", config_dict={
            **FAST, "data_path": data_root, "diffusion_steps": 50, "ddim_steps": 10})
        data = prepare_data(config)
        recommender = model_class(config, data.train._dataset).eval()
        batch = next(iter(data.test))[0][torch.arange(8)]
        out[model] = (recommender, batch)
    return out


def test_one_checkpoint_gives_one_set_of_metrics(data_root, in_tmp_cwd):
    settings, dataset = {**TINY, "data_path": data_root, "epochs": 1}, "ml-100k-tiny"
    result = run("DiffuRec-smallinit", dataset, config_dict=settings)
    checkpoint = result["saved_model_file"]
    fresh = []
    for _ in range(2):  # two new processes
        completed = subprocess.run(
            [sys.executable, "-c", EVALUATE_IN_A_NEW_PROCESS, "DiffuRec-smallinit", json.dumps(settings), checkpoint,
             dataset],
            capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONHASHSEED": "0"})
        assert completed.returncode == 0, completed.stderr[-2000:]
        line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT "))
        fresh.append(json.loads(line[len("RESULT "):]))
    assert fresh[0] == fresh[1] == dict(result["test_result"])

    scores = {}
    for eval_seed in (None, 7):
        config, model_class = build_config("DiffuRec-smallinit", dataset,
                                           config_dict={**settings, "eval_seed": eval_seed})
        data = prepare_data(config)
        trainer = build_trainer(config, model_class, data.train)
        metrics = trainer.evaluate(data.test, model_file=checkpoint)
        if eval_seed is None:
            assert dict(metrics) == dict(result["test_result"])
        scores[eval_seed] = trainer.model.full_sort_predict(next(iter(data.test))[0])
    # Another eval_seed draws other noise. (Metrics can still coincide: at std 0.02, x_t barely reaches the model.)
    assert (scores[None] - scores[7]).abs().max() > 1e-4
