"""The sync bridge for async transports, the streamed tar of `fwemu import`, and `fwemu train` config."""

from __future__ import annotations

import argparse
import io
import tarfile
import threading

import httpx
import pytest
from fastapi import FastAPI, Request

from fwemu.client.commands import import_cmd, train_cmd
from fwemu.client.commands.ls_cmd import render
from fwemu.client.control_plane import CheckpointRow
from fwemu.client.http import ApiSession
from fwemu.client.transport import SyncBridgeTransport, as_sync_transport


def echo_app() -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request):
        body = b"".join([c async for c in request.stream()])
        return {"size": len(body), "head": body[:5].decode(), "key": request.headers.get("x-api-key")}

    return app


def test_async_transport_is_bridged_for_sync_clients():
    transport = as_sync_transport(httpx.ASGITransport(echo_app()))
    assert isinstance(transport, SyncBridgeTransport)
    session = ApiSession("http://app", "k", transport=httpx.ASGITransport(echo_app()))
    assert session.post_json("/echo", {"a": 1}) == {"size": len(b"{\"a\":1}"), "head": '{"a":', "key": "k"}


def test_bridge_streams_generator_bodies():
    session = ApiSession("http://app", "k", transport=httpx.ASGITransport(echo_app()))
    chunks = (b"x" * 1000 for _ in range(50))
    assert session.request("POST", "/echo", content=chunks).json()["size"] == 50_000


def test_bridge_serves_concurrent_threads():
    session = ApiSession("http://app", "k", transport=httpx.ASGITransport(echo_app()))
    sizes: list[int] = []

    def call(n: int) -> None:
        sizes.append(session.request("POST", "/echo", content=b"y" * n).json()["size"])

    threads = [threading.Thread(target=call, args=(n,)) for n in range(1, 9)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(sizes) == list(range(1, 9))


def test_sync_transports_are_used_unchanged():
    mock = httpx.MockTransport(lambda r: httpx.Response(200))
    assert as_sync_transport(mock) is mock and as_sync_transport(None) is None
    with pytest.raises(TypeError):
        as_sync_transport(object())


def test_tar_stream_is_a_valid_tar_of_the_files(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "model.safetensors").write_bytes(bytes(range(256)) * 41)  # not a multiple of 512
    (tmp_path / "empty.txt").write_bytes(b"")
    files = import_cmd.flat_files(tmp_path)
    pieces = list(import_cmd.tar_stream(files, chunk_size=1000))
    assert max(len(p) for p in pieces) <= 1024  # streamed in small pieces, never the whole file
    with tarfile.open(fileobj=io.BytesIO(b"".join(pieces))) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    assert members == {f.name: f.read_bytes() for f in files}


def test_import_refuses_nested_directories(tmp_path):
    (tmp_path / "sub").mkdir()
    with pytest.raises(ValueError, match="flat directory"):
        import_cmd.flat_files(tmp_path)
    with pytest.raises(ValueError, match="not a directory"):
        import_cmd.flat_files(tmp_path / "missing")


def parse_train(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train_cmd.configure(parser)
    return parser.parse_args(argv)


def test_train_config_from_toml_with_flag_overrides(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "hi there"}\n')
    toml = tmp_path / "c.toml"
    toml.write_text(f'log_path = "{tmp_path}/run"\nbase_model = "accounts/fireworks/models/m"\n'
                    f'dataset = "{data}"\nlora_rank = 8\nbatch_size = 2\n[weight_sync]\ndcp_save_interval = 3\n')
    cfg = train_cmd.build_config(parse_train(["--config", str(toml), "--batch-size", "5", "--base-url", "http://x",
                                              "--api-key", "k", "--output-model-id", "out"]))
    assert (cfg.lora_rank, cfg.batch_size, cfg.weight_sync.dcp_save_interval) == (8, 5, 3)
    assert (cfg.base_url, cfg.api_key, cfg.output_model_id) == ("http://x", "k", "out")
    cfg.validate()


def test_train_config_errors_are_specific(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('log_path = "x"\nbase_model = "m"\ndataset = "d"\nlearning_rte = 0.1\n')
    with pytest.raises(ValueError, match="unknown config key.*learning_rte"):
        train_cmd.build_config(parse_train(["--config", str(toml)]))
    with pytest.raises(ValueError, match="missing required setting.*dataset"):
        train_cmd.build_config(parse_train(["--log-path", "x", "--base-model", "m"]))


def test_train_config_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.toml"
    bad.write_text('log_path = "x"\nbase_model = \n')
    with pytest.raises(ValueError, match=f"^{bad}: not valid TOML: .*line 2"):
        train_cmd.build_config(parse_train(["--config", str(bad)]))
    with pytest.raises(ValueError, match="--config .*missing.toml: no such file"):
        train_cmd.build_config(parse_train(["--config", str(tmp_path / "missing.toml")]))


def test_the_example_config_reads_its_dataset_relative_to_the_file(monkeypatch, tmp_path):
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "sft" / "run.toml"
    monkeypatch.chdir(tmp_path)                     # anywhere but the repo
    cfg = train_cmd.build_config(parse_train(["--config", str(example)]))
    cfg.validate()                                  # the dataset resolves: it is a file
    assert Path(cfg.dataset).resolve() == (example.parent / "../../client/data/tiny_chat.jsonl").resolve()
    assert (cfg.output_model_id, cfg.lora_rank, cfg.weight_sync.dcp_save_interval) == ("sft-example", 8, 4)


def test_ls_table_shows_name_kind_promotable_created():
    rows = [CheckpointRow.from_wire({"name": "accounts/a/rlorTrainerJobs/j/checkpoints/step-2",
                                     "checkpointType": "CHECKPOINT_TYPE_TRAINING_LORA", "promotable": False,
                                     "createTime": "2025-03-01T12:00:13Z"}),
            CheckpointRow.from_wire({"name": "accounts/a/rlorTrainerJobs/j/checkpoints/step-2-abcdef01",
                                     "checkpointType": "INFERENCE_LORA", "promotable": True,
                                     "createTime": "2025-03-01T12:00:13.5+00:00"})]
    lines = render(rows).splitlines()
    assert lines[0].split() == ["NAME", "KIND", "PROMOTABLE", "CREATED"]
    assert lines[1].split() == ["step-2", "TRAINING_LORA", "no", "2025-03-01T12:00:13.000000Z"]
    assert lines[2].split() == ["step-2-abcdef01", "INFERENCE_LORA", "yes", "2025-03-01T12:00:13.500000Z"]
    assert render([]) == "(no checkpoints)"
