"""Weights: a file with `_orig_mod.` (compiled) or `module.` (DDP) keys loads cleanly; offline hub fails clearly."""
import pytest
import torch
from safetensors.torch import save_file

from kit.models import WeightsError, create_model


@pytest.mark.parametrize("wrap, prefix", [(lambda m: torch.compile(m), "_orig_mod."),
                                          (lambda m: torch.nn.DataParallel(m), "module.")])
def test_wrapped_checkpoint_loads_into_a_plain_model_with_a_new_head(tmp_path, wrap, prefix):
    torch.manual_seed(0)
    trained = create_model("test_resnet", 10)
    state = wrap(trained).state_dict()
    assert all(k.startswith(prefix) for k in state)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model = create_model("test_resnet", 3, weights=str(path))  # 3 classes: the 10-class head is skipped
    own, ref = model.state_dict(), trained.state_dict()
    head = {"fc.weight", "fc.bias"}
    for k in own:
        if k not in head:
            torch.testing.assert_close(own[k], ref[k])
    assert own["fc.weight"].shape == (3, ref["fc.weight"].shape[1])


def test_pretrained_offline_names_the_local_file_option(monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import: patch the constant
    with pytest.raises(WeightsError, match="--weights="):
        create_model("test_resnet.r160_in1k", 3, pretrained=True)
    with pytest.raises(WeightsError, match="not found"):
        create_model("test_resnet", 3, weights="/no/such/file.safetensors")
