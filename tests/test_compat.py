"""The Composer (and wandb) behaviours train/compat.py works around still hold in the installed versions.

Each test pins one assumption of one workaround; when an upgrade changes that behaviour, the test names the
workaround to revisit."""

from __future__ import annotations

import inspect
import random

import composer
import pytest
import torch
import wandb
from composer.callbacks import CheckpointSaver
from composer.core import DataSpec, Event, State
from composer.loggers import WandBLogger
from composer.trainer.trainer import Trainer
from composer.utils import dist

from modernbert_pretrain.train import compat


def _source(obj) -> str:
    return inspect.getsource(obj)


def test_the_installed_versions_are_the_targeted_ones():
    assert composer.__version__ in compat.COMPOSER_VERSIONS


def test_signal_file_name_is_shared_by_all_nodes_upstream():
    original = getattr(dist.get_node_signal_file_name, "_upstream", dist.get_node_signal_file_name)
    assert "broadcast_object_list(file_name_list, src=0)" in _source(original)  # one name for every node
    autoresume = _source(Trainer._get_autoresume_checkpoint)
    assert "dist.get_node_signal_file_name()" in autoresume  # looked up on the module: our patch is seen
    assert "os.remove(signal_file_path)" in autoresume
    compat.per_node_signal_files()
    assert dist.get_node_signal_file_name(random.Random(0)).endswith(f"_n{dist.get_node_rank()}")


def test_wandb_logger_calls_get_url_which_wandb_dropped():
    assert "wandb.run.get_url()" in _source(WandBLogger.init)
    run_cls = wandb.sdk.wandb_run.Run
    native = getattr(run_cls, "get_url", None)
    assert native is None or getattr(native, "_compat", False), "wandb has Run.get_url again: drop the patch"
    assert isinstance(inspect.getattr_static(run_cls, "url"), property)
    compat.patch_wandb_run_url()
    assert getattr(run_cls.get_url, "_compat", False)


def test_autoresume_asks_every_logger_and_skips_file_not_found(tmp_path):
    download = _source(Trainer._try_checkpoint_download)
    assert "for logger in remote_destination" in download
    assert "object_store=logger" in download
    assert "except (NotImplementedError, FileNotFoundError)" in download
    logger = compat.local_checkpoints_wandb_logger(project="p", name="n", init_kwargs={"mode": "offline"})
    assert isinstance(logger, WandBLogger)
    with pytest.raises(FileNotFoundError):
        logger.download_file("latest-rank0.pt", str(tmp_path / "x"))


def test_checkpoint_saver_asks_its_save_interval_attribute():
    assert "self.save_interval(state, Event.BATCH_CHECKPOINT)" in _source(CheckpointSaver.batch_checkpoint)
    saver = CheckpointSaver(folder="unused", save_interval="1000ba")
    assert callable(saver.save_interval)

    class FakeState:
        callbacks = [saver]

    calls = []
    saver.save_interval = lambda s, e: calls.append(e) or False
    flag = {"on": False}
    compat.save_also_when(FakeState(), lambda: flag["on"])
    assert saver.save_interval(None, Event.BATCH_CHECKPOINT) is False and calls == [Event.BATCH_CHECKPOINT]
    flag["on"] = True
    assert saver.save_interval(None, Event.BATCH_CHECKPOINT) is True


def test_checkpoint_saver_saves_through_its_private_method():
    for hook in (CheckpointSaver.batch_checkpoint, CheckpointSaver.epoch_checkpoint):
        assert "self._save_checkpoint(" in _source(hook)
    saver = CheckpointSaver(folder="unused", save_interval="1000ba")

    class FakeState:
        callbacks = [saver]

    def failing(state, logger):
        raise OSError(28, "No space left on device")

    saver._save_checkpoint = failing
    seen = []
    compat.wrap_checkpoint_save(FakeState(), lambda state, err: seen.append(err.errno))
    compat.wrap_checkpoint_save(FakeState(), lambda state, err: seen.append("twice"))  # wrapped once only
    with pytest.raises(OSError):
        saver._save_checkpoint(None, None)
    assert seen == [28]


def test_trainer_steps_each_optimizer_with_a_closure_and_no_event_before_the_update():
    batch = _source(Trainer._train_batch)
    assert "for optimizer in self.state.optimizers" in batch
    assert "optimizer.step(\n                                closure=" in batch
    assert "optimizer.step()" in batch
    assert not any("OPTIMIZER" in e.name or "BEFORE_STEP" in e.name for e in Event)
    param = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([param], lr=1.0)
    refused = []
    compat.wrap_optimizer_step(optimizer, allow=lambda: bool(torch.isfinite(param.grad).all()),
                               on_refused=lambda: refused.append(1))

    def closure(value):
        def run():
            param.grad = torch.full((2,), value)
            return value
        return run

    assert optimizer.step(closure=closure(1.0)) == 1.0 and param.tolist() == [0.0, 0.0]
    assert optimizer.step(closure=closure(float("nan"))) != 0 and refused == [1] and param.tolist() == [0.0, 0.0]


def test_trainer_restores_rng_only_at_an_epoch_start_or_while_spinning():
    loop = _source(Trainer._train_loop)
    assert "if self.state.timestamp.batch_in_epoch == 0 and self._rng_state is not None" in loop
    assert loop.count("reproducibility.load_rng_state(self._rng_state)") == 2


def test_state_finds_loader_state_only_through_a_dataloader_dataset():
    source = _source(State._dataset_of)
    assert "isinstance(dataloader, DataLoader)" in source and "return dataloader.dataset" in source
    assert "dataset.state_dict(num_samples, True)" in _source(State._dataset_state_dict)

    class Dataset(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(())

    dataset = Dataset()
    loader = torch.utils.data.DataLoader(dataset, batch_size=None)
    assert State._dataset_of(None, DataSpec(loader)) is dataset
    assert State._dataset_of(None, iter([])) is None


def test_trainer_publishes_the_steps_rank_averaged_loss_on_state():
    # MetricsFile.step_loss reads it: the step's loss over all microbatches, summed over ranks / world size.
    loop = _source(Trainer._train_loop)
    assert "map_collection(total_loss_dict, dist.all_reduce)" in loop
    assert "loss.cpu().item() / dist.get_world_size()" in loop
    assert "self.state.total_loss_dict = total_loss_dict" in loop


def test_schedulers_step_before_the_clock_advances_and_batch_start_sees_the_new_clock():
    # Why train/schedule.py TokenSchedule sets the LR at BATCH_START instead of using a Composer scheduler.
    loop = _source(Trainer._train_loop)
    step = loop.index("scheduler.step()")
    advance = loop.index("self.state.timestamp = self.state.timestamp.to_next_batch(")
    batch_start = loop.index("self.engine.run_event(Event.BATCH_START)")
    assert batch_start < step < advance  # BATCH_START of the next batch runs after this advance


def test_trainer_start_names_the_cpu_through_a_child_python_which_the_patch_avoids(monkeypatch):
    import subprocess

    import cpuinfo
    from composer.utils import collect_env

    # upstream: every Trainer logs get_composer_env_dict(), whose CPU name comes from a child Python process
    assert "get_composer_env_dict()" in _source(Trainer.__init__)
    assert "get_cpu_model()" in _source(collect_env.get_composer_env_dict)
    upstream = getattr(collect_env.get_cpu_model, "upstream", None) or collect_env.get_cpu_model  # patched yet?
    assert "cpuinfo.get_cpu_info()" in _source(upstream)
    assert "Popen" in _source(cpuinfo.get_cpu_info_json)

    monkeypatch.setattr(collect_env, "get_cpu_model", collect_env.get_cpu_model)  # restored after the test
    compat.cheap_cpu_model()

    def no_child(*args, **kwargs):
        raise AssertionError(f"a child process was started: {args}")

    monkeypatch.setattr(subprocess, "Popen", no_child)
    name = collect_env.get_composer_env_dict()["cpu_model"]
    assert isinstance(name, str) and name
