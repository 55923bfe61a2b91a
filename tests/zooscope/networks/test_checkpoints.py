"""Safe checkpoint loading: every bad file here is crafted for real, in the format it imitates."""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from zooscope.errors import InvalidCheckpointError
from zooscope.networks.checkpoints import (
    checkpoint_bytes,
    checkpoint_to_torch_bytes,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)


@pytest.fixture
def state_dict() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "module_list.0.weight": torch.randn(4, 1, 3, 3, generator=generator),
        "module_list.0.bias": torch.randn(4, generator=generator),
        "module_list.1.running_var": torch.rand(4, generator=generator).to(torch.float16),
        "module_list.1.num_batches_tracked": torch.tensor(7, dtype=torch.int64),
    }


def assert_same(loaded: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    # Key order is not compared: safetensors stores tensors by dtype and name, not insertion order.
    assert sorted(loaded) == sorted(expected)
    for key, value in expected.items():
        assert loaded[key].dtype == value.dtype
        assert torch.equal(loaded[key], value), key


class MarkerPayload:
    """Unpickling this would create `path`: the side effect a safe loader must never allow."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def safetensors_file(header: dict, data: bytes) -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + data


# ---- round trips -----------------------------------------------------------------------------------


def test_safetensors_round_trip_through_a_file_with_metadata(tmp_path: Path, state_dict) -> None:
    path = tmp_path / "model.safetensors"
    save_checkpoint(state_dict, path, metadata={"architecture": "cnn_s-1x28x28", "epoch": "20"})
    assert_same(load_checkpoint(path), state_dict)
    assert_same(load_checkpoint(str(path)), state_dict)
    assert read_metadata(path) == {"architecture": "cnn_s-1x28x28", "epoch": "20"}


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_bytes_round_trip(fmt: str, state_dict) -> None:
    assert_same(load_checkpoint(checkpoint_bytes(state_dict, fmt)), state_dict)


def test_torch_bytes_helper_is_a_torch_zip(state_dict) -> None:
    data = checkpoint_to_torch_bytes(state_dict)
    assert data[:2] == b"PK"
    assert_same(load_checkpoint(data), state_dict)


def test_views_sharing_storage_are_saved_as_independent_tensors() -> None:
    base = torch.arange(12, dtype=torch.float32)
    shared = {"a": base[:6].view(2, 3), "b": base[6:]}
    loaded = load_checkpoint(checkpoint_bytes(shared))
    assert torch.equal(loaded["a"], shared["a"]) and torch.equal(loaded["b"], shared["b"])


def test_format_is_sniffed_from_content_not_extension(tmp_path: Path, state_dict) -> None:
    misnamed = tmp_path / "model.pt"
    save_checkpoint(state_dict, misnamed)  # safetensors under a .pt name
    assert_same(load_checkpoint(misnamed), state_dict)
    other = tmp_path / "model.safetensors"
    other.write_bytes(checkpoint_bytes(state_dict, "pt"))
    assert_same(load_checkpoint(other), state_dict)


@pytest.mark.parametrize("wrapper", ["state_dict", "model_state_dict"])
def test_wrapped_state_dicts_are_unwrapped(wrapper: str, state_dict) -> None:
    buffer = io.BytesIO()
    torch.save({wrapper: state_dict, "epoch": 3, "optimizer": {"lr": 0.1}}, buffer)
    assert_same(load_checkpoint(buffer.getvalue()), state_dict)


def test_read_metadata_of_a_file_without_metadata(tmp_path: Path, state_dict) -> None:
    path = tmp_path / "plain.safetensors"
    save_checkpoint(state_dict, path)
    assert read_metadata(path) == {}
    with pytest.raises(InvalidCheckpointError, match="not a safetensors"):
        read_metadata(checkpoint_bytes(state_dict, "pt"))


# ---- code execution --------------------------------------------------------------------------------


def test_raw_pickle_that_would_create_a_file_is_refused_unopened(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"weight": MarkerPayload(marker)}, protocol=2))
    with pytest.raises(InvalidCheckpointError, match="re-save"):
        load_checkpoint(path)
    assert not marker.exists()


def test_torch_zip_whose_pickle_would_create_a_file_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(2), "payload": MarkerPayload(marker)}, buffer)
    assert not marker.exists()  # saving only records the call
    with pytest.raises(InvalidCheckpointError, match="other than tensors"):
        load_checkpoint(buffer.getvalue())
    assert not marker.exists()


def test_legacy_torch_serialisation_is_refused_with_advice(state_dict) -> None:
    buffer = io.BytesIO()
    torch.save(state_dict, buffer, _use_new_zipfile_serialization=False)
    with pytest.raises(InvalidCheckpointError, match="torch.save"):
        load_checkpoint(buffer.getvalue())


# ---- zip structure ---------------------------------------------------------------------------------


def recompress(data: bytes, compression: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info), compress_type=compression)
    return out.getvalue()


def test_deflate_compressed_entry_is_refused(state_dict) -> None:
    deflated = recompress(checkpoint_bytes(state_dict, "pt"), zipfile.ZIP_DEFLATED)
    with pytest.raises(InvalidCheckpointError, match="compressed"):
        load_checkpoint(deflated)


def test_rewritten_stored_zip_still_loads(state_dict) -> None:
    # The same rewrite with stored entries is accepted: the refusal above is about compression.
    stored = recompress(checkpoint_bytes(state_dict, "pt"), zipfile.ZIP_STORED)
    assert_same(load_checkpoint(stored), state_dict)


def test_zip_without_a_torch_pickle_is_refused() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(InvalidCheckpointError, match="data.pkl"):
        load_checkpoint(out.getvalue())


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_files_are_refused(fmt: str, keep: float, state_dict) -> None:
    data = checkpoint_bytes(state_dict, fmt)
    with pytest.raises(InvalidCheckpointError):
        load_checkpoint(data[: int(len(data) * keep)])


def test_torch_zip_with_a_corrupted_tensor_record_is_refused(state_dict) -> None:
    data = recompress(checkpoint_bytes(state_dict, "pt"), zipfile.ZIP_STORED)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            content = source.read(info)
            if info.filename.endswith("/data/0"):
                content = content[:3]  # a storage shorter than its tensor needs
            target.writestr(info.filename, content)
    with pytest.raises(InvalidCheckpointError):
        load_checkpoint(out.getvalue())


# ---- lying safetensors headers ---------------------------------------------------------------------


def test_header_longer_than_the_file_is_refused() -> None:
    data = safetensors_file({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, bytes(8))
    forged = struct.pack("<Q", 10_000) + data[8:]
    with pytest.raises(InvalidCheckpointError, match="truncated"):
        load_checkpoint(forged)


def test_offsets_past_the_data_region_are_refused() -> None:
    header = {"w": {"dtype": "F32", "shape": [4], "data_offsets": [16, 32]}}
    with pytest.raises(InvalidCheckpointError, match="outside"):
        load_checkpoint(safetensors_file(header, bytes(16)))


def test_overlapping_tensors_are_refused() -> None:
    header = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }
    with pytest.raises(InvalidCheckpointError, match="overlap"):
        load_checkpoint(safetensors_file(header, bytes(12)))


def test_size_that_disagrees_with_shape_is_refused() -> None:
    header = {"w": {"dtype": "F32", "shape": [10], "data_offsets": [0, 8]}}
    with pytest.raises(InvalidCheckpointError, match="lies about the tensor's size"):
        load_checkpoint(safetensors_file(header, bytes(8)))


def test_unaccounted_bytes_are_refused() -> None:
    gap = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
    with pytest.raises(InvalidCheckpointError, match="belong to no tensor"):
        load_checkpoint(safetensors_file(gap, bytes(12)))
    trailing = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    with pytest.raises(InvalidCheckpointError, match="after the last tensor"):
        load_checkpoint(safetensors_file(trailing, bytes(4096)))


@pytest.mark.parametrize(
    "entry",
    [
        {"dtype": "X99", "shape": [2], "data_offsets": [0, 8]},
        {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]},
        {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]},
        {"dtype": "F32", "shape": [2]},
    ],
)
def test_malformed_header_entries_are_refused(entry: dict) -> None:
    with pytest.raises(InvalidCheckpointError, match="'w'"):
        load_checkpoint(safetensors_file({"w": entry}, bytes(8)))


def test_well_formed_handcrafted_safetensors_loads() -> None:
    # Guards the forged-file tests: the helper itself produces files the loader accepts.
    values = torch.tensor([1.5, -2.0])
    header = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    loaded = load_checkpoint(safetensors_file(header, values.numpy().tobytes()))
    assert torch.equal(loaded["w"], values)


# ---- content ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused_by_name(fmt: str, bad: float, state_dict) -> None:
    state_dict["module_list.0.bias"][1] = bad
    with pytest.raises(InvalidCheckpointError, match=r"module_list\.0\.bias"):
        load_checkpoint(checkpoint_bytes(state_dict, fmt))


@pytest.mark.parametrize(
    "payload",
    [
        {"weight": [1.0, 2.0]},
        {"layer": {"weight": torch.zeros(2)}},
        torch.zeros(3),
        [torch.zeros(3)],
        {},
        {1: torch.zeros(2)},
    ],
    ids=["list-value", "nested-dict", "bare-tensor", "list", "empty", "int-key"],
)
def test_non_state_dict_payloads_are_refused(payload: object) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with pytest.raises(InvalidCheckpointError):
        load_checkpoint(buffer.getvalue())


def test_oversize_files_are_refused_before_reading(tmp_path: Path, state_dict) -> None:
    data = checkpoint_bytes(state_dict, "safetensors")
    path = tmp_path / "big.safetensors"
    path.write_bytes(data)
    with pytest.raises(InvalidCheckpointError, match="over the limit"):
        load_checkpoint(path, max_bytes=len(data) - 1)
    with pytest.raises(InvalidCheckpointError, match="over the limit"):
        load_checkpoint(data, max_bytes=len(data) - 1)
    assert_same(load_checkpoint(path, max_bytes=len(data)), state_dict)


@pytest.mark.parametrize("data", [b"", b"hello world, not a model", b"\x00" * 64])
def test_unrecognised_content_is_refused(data: bytes) -> None:
    with pytest.raises(InvalidCheckpointError):
        load_checkpoint(data)


def test_missing_file_is_an_invalid_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(InvalidCheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_own_checkpoints_load_without_the_audit_and_garbage_still_fails(state_dict) -> None:
    from zooscope.networks.checkpoints import load_own_checkpoint

    loaded = load_own_checkpoint(checkpoint_bytes(state_dict, metadata={"kind": "reconstructed"}))
    assert loaded.keys() == state_dict.keys()
    assert all(torch.equal(loaded[k], state_dict[k]) for k in state_dict)
    with pytest.raises(InvalidCheckpointError, match="safetensors"):
        load_own_checkpoint(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json")


def test_first_non_finite_finds_the_checkpoint_in_one_scan(state_dict) -> None:
    from zooscope.networks.checkpoints import first_non_finite

    batch = [{k: v.clone() for k, v in state_dict.items()} for _ in range(4)]
    assert first_non_finite(batch) is None
    assert first_non_finite([]) is None
    last_key = [k for k, v in state_dict.items() if v.is_floating_point()][-1]
    batch[2][last_key].view(-1)[-1] = float("inf")  # the very last value of checkpoint 2
    batch[3][last_key].view(-1)[0] = float("nan")
    assert first_non_finite(batch) == 2
    mixed = [
        {"w": torch.ones(3, dtype=torch.float64)},
        {"w": torch.tensor([1.0, float("nan")], dtype=torch.bfloat16)},
    ]
    assert first_non_finite(mixed) == 1
    assert first_non_finite([{"steps": torch.tensor([7])}]) is None  # integers are never non-finite


def test_the_same_checkpoint_always_gives_the_same_bytes(state_dict) -> None:
    """The service deduplicates made checkpoints by their sha256; the safetensors library writes
    metadata in a varying order, so the header is sorted."""
    metadata = {"zooscope_kind": "reconstructed", "zooscope_job": "j1", "source": "x", "note": "n"}
    first = checkpoint_bytes(state_dict, metadata=metadata)
    assert all(checkpoint_bytes(state_dict, metadata=dict(metadata)) == first for _ in range(30))
    assert read_metadata(first) == metadata
    loaded = load_checkpoint(first)
    assert all(torch.equal(loaded[k], state_dict[k]) for k in state_dict)
