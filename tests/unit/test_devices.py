"""One device resolver for every backend: `cuda` where torch sees no GPU stops the job with the config
key and the fix (the T2V pipeline used to fall back to the CPU without a word)."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from vpo.core.devices import DeviceError, resolve_device


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_auto_and_cpu_never_fail(no_gpu):
    assert resolve_device("auto", "t2v.device") == torch.device("cpu")
    assert resolve_device("cpu", "t2v.device") == torch.device("cpu")


def test_auto_takes_the_gpu_and_cuda_n_must_exist(one_gpu):
    assert resolve_device("auto", "reward.device") == torch.device("cuda")
    assert resolve_device("cuda:0", "reward.device") == torch.device("cuda:0")
    with pytest.raises(DeviceError, match=r"reward\.device is 'cuda:1', but torch sees only 1 CUDA device"):
        resolve_device("cuda:1", "reward.device")


def test_cuda_without_a_gpu_names_the_key_and_the_fix(no_gpu):
    with pytest.raises(
        DeviceError, match=r"sample\.device is 'cuda'.*no CUDA device.*Fix:.*sample\.device: auto"
    ):
        resolve_device("cuda", "sample.device")
    with pytest.raises(DeviceError, match=r"t2v\.device: unknown device 'tpu'"):
        resolve_device("tpu", "t2v.device")


def test_the_t2v_pipeline_refuses_cuda_without_a_gpu_before_loading(no_gpu, tmp_path):
    from vpo.t2v import t2v_backend

    spec = {"model_path": str(tmp_path / "no-such-model"), "revision": None, "device": "cuda"}
    with pytest.raises(DeviceError, match=r"t2v\.device is 'cuda'"):
        t2v_backend("diffusers").build(spec)


def test_the_llm_and_reward_backends_refuse_it_with_their_keys(no_gpu, tmp_path, monkeypatch):
    from vpo.llm.factory import device_key
    from vpo.llm.hf import HFBackend
    from vpo.reward.factory import open_scorer
    from vpo.reward.visionreward import VisionRewardVideo

    missing = str(tmp_path / "no-such-model")
    assert device_key({"name": "judge"}) == "llms.judge.device"
    assert device_key({"section": "sample"}) == "sample.device"
    with pytest.raises(DeviceError, match=r"llms\.judge\.device is 'cuda'"):
        HFBackend(missing, "hf|x", device="cuda", device_key="llms.judge.device")
    spec = {"backend": "hf-vlm", "model_path": missing, "revision": None, "answer_mode": "free"}
    with pytest.raises(DeviceError, match=r"reward\.device is 'cuda'"):
        open_scorer({**spec, "dtype": "float32", "device": "cuda"})
    # VisionReward's remote code needs transformers 4.42: a stand-in passes that check.
    fake = types.ModuleType("transformers")
    fake.__version__ = "4.42.4"
    fake.AutoModelForCausalLM = fake.AutoTokenizer = None
    monkeypatch.setitem(sys.modules, "transformers", fake)
    with pytest.raises(DeviceError, match=r"reward\.device is 'cuda'"):
        VisionRewardVideo(missing, device="cuda")._load()
