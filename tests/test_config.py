import pytest

from ascend_graph.config import GraphConfig


def test_defaults_are_valid_and_sorted() -> None:
    config = GraphConfig.from_options({"capture_sizes": [8, 1, 4]})
    assert config.capture_sizes == (1, 4, 8)
    assert config.max_capture_size == 8


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"capture_sizes": []}, "capture_sizes"),
        ({"capture_sizes": [0, 2]}, "capture_sizes"),
        ({"capture_sizes": [2, 2]}, "capture_sizes"),
        ({"capture_sizes": [1.5]}, "capture_sizes"),
        ({"lowering": "tensorrt"}, "lowering"),
        ({"device": "tpu"}, "device"),
        ({"output_mode": "borrowed"}, "output_mode"),
        ({"warmup_iters": 0}, "warmup_iters"),
        ({"pad_values": {"positions": "end"}}, "pad_values"),
        ({"batch_dim": "batch"}, "batch_dim"),
        ({"batch_dim": -1}, "batch_dim"),
        ({"batch_dim": True}, "batch_dim"),
        ({"batch_dim": {}}, "batch_dim"),
        ({"batch_dim": {"input_ids": "0"}}, "batch_dim"),
        ({"batch_dim": [0, 1]}, "batch_dim"),
    ],
)
def test_bad_values_name_the_field_and_the_allowed(options: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"{field}=.* must be"):
        GraphConfig.from_options(options)


def test_unknown_option_lists_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['capture_size'\].*capture_sizes"):
        GraphConfig.from_options({"capture_size": [1]})


def test_env_debug_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASCEND_GRAPH_DEBUG", "1")
    assert GraphConfig.from_options({}).debug is True
    monkeypatch.setenv("ASCEND_GRAPH_DEBUG", "0")
    assert GraphConfig.from_options({}).debug is False


def test_config_is_frozen() -> None:
    config = GraphConfig()
    with pytest.raises(AttributeError):
        config.debug = True  # type: ignore[misc]


def test_the_npu_lowering_follows_vllm_ascend_npugraph_ex_by_default_and_no_ge_mode() -> None:
    from ascend_graph.lowering import resolve_lowering

    assert resolve_lowering("auto", "npu") == "npugraph_ex"
    assert resolve_lowering("torchair", "npu") == "torchair"  # vllm-ascend's fallback form, opt-in
    with pytest.raises(ValueError, match="lowering='inductor' is not available on device 'npu'"):
        resolve_lowering("inductor", "npu")
    with pytest.raises(ValueError, match="lowering='npugraph_ex' is not available on device 'cpu'"):
        resolve_lowering("npugraph_ex", "cpu")
    assert GraphConfig(lowering="npugraph_ex").lowering == "npugraph_ex"


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("auto", "auto"),
        ("none", "none"),
        (1, 1),
        ({"positions": 0, "input_ids": 1}, (("input_ids", 1), ("positions", 0))),
        ([("x", 0)], (("x", 0),)),
    ],
)
def test_batch_dim_forms(given: object, stored: object) -> None:
    assert GraphConfig.from_options({"batch_dim": given}).batch_dim == stored
    assert GraphConfig().batch_dim == "auto"
