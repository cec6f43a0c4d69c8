"""The self-check runs every model, variant and SASRec on the CPU in-process and reports failures."""

import io

import pytest
import torch

from recbole_diffusion import selfcheck
from recbole_diffusion.model import MODELS
from recbole_diffusion.config.configurator import model_variants


# Every model and variant, on a slice small enough for the suite (the command's default is 300 users): the checks
# are about code paths, and each one trains, saves, reloads and evaluates the same way at any size.
USERS = 20


def test_selfcheck_passes_every_check_on_the_cpu(in_tmp_cwd):
    stream = io.StringIO()
    report = selfcheck.run_selfcheck(device="cpu", users=USERS, stream=stream)
    output = stream.getvalue()
    assert report.failures == 0, output
    assert f"first {USERS} users of ml-100k" in output.splitlines()[0]
    names = [*MODELS, *model_variants(), "SASRec"]
    per_model = 3  # train and test, reload, group metrics
    resumed = len(MODELS) + 1  # the diffusion models and SASRec continue for a second epoch
    expected = len(names) * per_model + len(MODELS) * len(selfcheck.SAMPLERS) + resumed
    assert len(report.lines) == expected and all(line.startswith("PASS") for line in report.lines)
    assert f"{expected} checks, all checks passed" in output
    assert not list(in_tmp_cwd.iterdir())  # logs and checkpoints stayed in the temporary folder


def test_a_failing_check_is_reported_and_sets_the_exit_status(in_tmp_cwd, capsys):
    assert selfcheck.main(["--device", "cpu", "--models", "NoSuchModel", "--users", "50"]) == 1
    output = capsys.readouterr().out
    assert "FAIL  NoSuchModel: train 1 epoch, test" in output and "1 check(s) FAILED" in output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_refused_with_a_message(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(SystemExit, match="torch sees no such CUDA device"):
        selfcheck.main(["--device", "cuda"])
