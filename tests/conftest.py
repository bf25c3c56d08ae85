"""Shared test helper: prove that a visualization leaves a model exactly as it found it."""

from __future__ import annotations

import contextlib
import os

import pytest
import torch
from tiny import count_hooks
from torch import nn


@pytest.fixture
def model_untouched():
    """``with model_untouched(model): ...`` asserts that, after the block (also one that raised inside a
    ``pytest.raises``), every parameter, ``.grad`` (tensor or ``None``), buffer (BatchNorm running statistics,
    ``num_batches_tracked``), ``training`` flag and hook count is exactly what it was before."""

    @contextlib.contextmanager
    def check(model: nn.Module):
        parameters = {name: p.detach().clone() for name, p in model.named_parameters()}
        grads = {name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()}
        buffers = {name: b.clone() for name, b in model.named_buffers()}
        flags = {name: m.training for name, m in model.named_modules()}
        hooks = count_hooks(model)
        yield
        for name, p in model.named_parameters():
            assert torch.equal(p.detach(), parameters[name]), f"parameter {name} changed"
            if grads[name] is None:
                assert p.grad is None, f"{name}.grad was None and is now set"
            else:
                assert p.grad is not None and torch.equal(p.grad, grads[name]), f"{name}.grad changed"
        for name, b in model.named_buffers():
            assert torch.equal(b, buffers[name]), f"buffer {name} changed"
        assert {name: m.training for name, m in model.named_modules()} == flags
        assert count_hooks(model) == hooks

    return check


THREADS = int(os.environ.get("CNNSEE_TEST_THREADS", "1"))


@pytest.fixture(autouse=True)
def torch_threads():
    """Run torch on ``CNNSEE_TEST_THREADS`` intra-op threads (default 1) for the block of a test.

    The tensors in these tests are tiny: on a busy 2-core machine, waiting for a second thread costs up to 100x
    more than it saves (seconds instead of milliseconds per test). Results must not depend on it beyond float32's
    rounding: run ``CNNSEE_TEST_THREADS=2 pytest`` to check (threads change the order of additions). Used by every
    test.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    for variable, value in {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(tmp_path),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
        "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),
    }.items():
        monkeypatch.setenv(variable, value)


@pytest.fixture
def mlflow_file_store(tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses a file store otherwise
    return "file:" + str(tmp_path / "mlruns")
