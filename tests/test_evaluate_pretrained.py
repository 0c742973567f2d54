"""The pretrained smoke model (conftest's `pretrained_smoke`, trained once per test run) beats random init on
word order. Scheduled after the long files, so that under pytest-xdist the model is ready when this file starts;
code search on the same model is in test_evaluate_embedded.py."""

import pytest

from modernbert_pretrain.evaluate.random_init import write_random_init
from modernbert_pretrain.evaluate.tasks import RunArgs
from modernbert_pretrain.evaluate.tasks.word_order import WordOrderSettings, run_word_order


@pytest.mark.slow
def test_pretrained_checkpoint_beats_random_init_on_word_order(pretrained_smoke, eval_corpus, tmp_path):
    def args(model):
        return RunArgs(model_dir=str(model), seed=0, hparams={}, data_dir=str(eval_corpus), work_dir="/unused")

    baseline = write_random_init(pretrained_smoke, tmp_path, seed=0)
    trained = run_word_order(args(pretrained_smoke), WordOrderSettings())
    random_init = run_word_order(args(baseline), WordOrderSettings())
    assert trained["bow_accuracy"] == 0.5
    assert trained["accuracy"] > random_init["accuracy"] + 0.15, (trained, random_init)
