import json
import socket
import threading

import pytest

from tests.test_cli import assert_clean_failure, tlcore
from tlcore import text
from tlcore.errors import StudioError

pytestmark = pytest.mark.real_assets  # the real GPT-2 tokenizer from ../shared

REPEATED = "The cat sat on the mat. " * 40


@pytest.fixture
def model(tiny_gpt2_preset):
    text.forget_model(str(tiny_gpt2_preset))
    return text.load_gpt2(str(tiny_gpt2_preset))


def test_the_real_tokenizer_round_trips_text(gpt2_tokenizer_dir):
    tokenizer = text.build_tokenizer(gpt2_tokenizer_dir / "encoder.json", gpt2_tokenizer_dir / "vocab.bpe")
    assert tokenizer.vocabulary_size() == 50257
    assert [int(i) for i in tokenizer("Hello world")] == [15496, 995]  # GPT-2's published ids
    assert tokenizer.detokenize(tokenizer("Transfer learning, naïvely ✓")) == "Transfer learning, naïvely ✓"


def test_a_local_preset_loads_once_per_process(tiny_gpt2_preset, model):
    assert text.load_gpt2(str(tiny_gpt2_preset)) is model
    assert text.context_length(model) == 64


@pytest.mark.parametrize("sampler", text.SAMPLERS)
def test_every_sampler_continues_the_prompt(model, sampler):
    generation = text.generate(
        model, ["The quick brown", "Once upon"], text.SamplerConfig(sampler=sampler, max_length=16)
    )
    assert [t.startswith(p) for t, p in zip(generation.texts, ["The quick brown", "Once upon"])] == [True, True]
    assert generation.new_tokens > 0 and generation.tokens_per_second > 0


def test_a_seed_makes_sampling_reproducible(model):
    settings = text.SamplerConfig(sampler="random", max_length=20, seed=7)
    first = text.generate(model, "The quick brown", settings).texts
    assert text.generate(model, "The quick brown", settings).texts == first
    different = [
        text.generate(model, "The quick brown", text.SamplerConfig(sampler="random", max_length=20, seed=s)).texts
        for s in (8, 9, 10)
    ]
    assert any(d != first for d in different)


@pytest.mark.parametrize(
    "prompt, settings, fragment",
    [
        ("", text.SamplerConfig(), "prompt is empty"),
        ("   \n\t ", text.SamplerConfig(), "prompt is empty"),
        ("word " * 10_001, text.SamplerConfig(), "characters; the limit"),
        ("word " * 80, text.SamplerConfig(max_length=64), "context is 64"),
        ("hello there", text.SamplerConfig(max_length=0), "max_length"),
        ("hello there", text.SamplerConfig(max_length=10**6), "max_length"),
        ("hello there friend", text.SamplerConfig(max_length=2), "no room"),
        ("hello", text.SamplerConfig(sampler="nucleus"), "Unknown sampler"),
        ("hello", text.SamplerConfig(temperature=0), "temperature"),
    ],
)
def test_bad_prompts_and_settings_are_explained(model, prompt, settings, fragment):
    with pytest.raises(StudioError, match=fragment):
        text.generate(model, prompt, settings)


def test_unknown_model_and_failed_download_say_what_to_do(monkeypatch):
    with pytest.raises(StudioError, match="Unknown model 'gpt9'.*gpt2_base_en"):
        text.load_gpt2("gpt9")
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: (_ for _ in ()).throw(socket.gaierror(-3, "offline")))
    with pytest.raises(StudioError, match="Could not download 'gpt2_base_en'.*point to that folder"):
        text.load_gpt2("gpt2_base_en")
    with pytest.raises(StudioError, match="Could not download 'hf://"):
        text.load_gpt2("hf://openai-community/gpt2")


def test_fine_tuning_on_repeated_text_makes_greedy_generation_reproduce_it(model, tmp_path):
    from tlcore.jobs import ProgressLog

    log = ProgressLog()
    config = text.TextConfig(
        model="tiny", sequence_length=32, epochs=40, batch_size=4, learning_rate=3e-3, sample_prompt="The cat"
    )
    metrics = text.finetune(config, REPEATED, tmp_path / "run", log=log, model=model)
    assert metrics["loss_after"] < metrics["loss_before"] / 4
    assert metrics["after"].startswith("The cat sat on the mat. The cat sat on the mat.")
    assert not metrics["before"].startswith("The cat sat on the mat.")
    assert len(log.records(kind="epoch")) == 40 and log.last("status")["status"] == "done"
    reloaded = text.load_gpt2(str(tmp_path / "run" / "preset"))
    greedy = text.generate(reloaded, "The cat", text.SamplerConfig(sampler="greedy", max_length=20)).texts[0]
    assert greedy.startswith("The cat sat on the mat.")
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert history[0].endswith("perplexity") and len(history) == 41


def test_lora_trains_only_the_adapters(tiny_gpt2_preset, tmp_path):
    text.forget_model(str(tiny_gpt2_preset))
    model = text.load_gpt2(str(tiny_gpt2_preset))
    frozen_before = {w.path: w.numpy().copy() for w in model.backbone.weights}
    config = text.TextConfig(
        model="tiny",
        sequence_length=32,
        epochs=3,
        batch_size=4,
        learning_rate=3e-3,
        lora_rank=4,
        sample_prompt="The cat",
    )
    text.finetune(config, REPEATED, tmp_path / "lora", model=model)
    trainable = text.trainable_parameter_names(model)
    assert trainable and all("lora" in name for name in trainable)
    changed = [path for path, value in frozen_before.items() if not (_value(model, path) == value).all()]
    assert changed == []  # every original weight is untouched; only the new adapters moved
    assert (tmp_path / "lora" / "adapter.lora.h5").is_file()
    text.forget_model(str(tiny_gpt2_preset))


def _value(model, path):
    return next(w for w in model.backbone.weights if w.path == path).numpy()


def test_stop_request_ends_text_fine_tuning_early(tiny_gpt2_preset, tmp_path):
    from tlcore.jobs import ProgressLog

    text.forget_model(str(tiny_gpt2_preset))
    model = text.load_gpt2(str(tiny_gpt2_preset))
    log, stop = ProgressLog(), threading.Event()
    config = text.TextConfig(
        model="tiny", sequence_length=32, epochs=500, batch_size=1, learning_rate=1e-3, sample_prompt="The cat"
    )
    worker = threading.Thread(
        target=lambda: text.finetune(config, REPEATED, tmp_path / "stopped", log=log, stop=stop, model=model)
    )
    worker.start()
    while not log.records(kind="batch") and worker.is_alive():
        threading.Event().wait(0.05)
    stop.set()
    worker.join(timeout=120)
    metrics = json.loads((tmp_path / "stopped" / "metrics.json").read_text())
    assert metrics["stopped_early_by_user"] and metrics["epochs_run"] < 500
    text.forget_model(str(tiny_gpt2_preset))


def test_no_text_or_binary_text_is_refused():
    with pytest.raises(StudioError, match="no text to train on"):
        text.chunk_text(None, "  \n ", 32)
    with pytest.raises(StudioError, match="not UTF-8 text"):
        text.read_text_files([("photo.txt", b"\xff\xd8\xff\xe0 binary")])


def test_cli_generate_and_finetune_text(tiny_gpt2_preset, tmp_path):
    completed = tlcore(
        "generate",
        "--model",
        tiny_gpt2_preset,
        "--prompt",
        "The quick brown",
        "--max-length",
        12,
        "--sampler",
        "greedy",
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["text"].startswith("The quick brown") and result["new_tokens"] > 0
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(REPEATED)
    completed = tlcore(
        "finetune-text",
        "--model",
        tiny_gpt2_preset,
        "--text",
        corpus,
        "--out",
        tmp_path / "run",
        "--epochs",
        2,
        "--sequence-length",
        32,
        "--lr",
        "3e-3",
        "--lora-rank",
        2,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["loss_after"] < json.loads(completed.stdout)["loss_before"]
    assert (tmp_path / "run" / "preset" / "config.json").is_file()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["generate", "--model", "gpt9", "--prompt", "hi"], "Unknown model"),
        (["generate", "--model", "PRESET", "--prompt", "   "], "prompt is empty"),
        (["generate", "--model", "PRESET", "--prompt", "hi", "--max-length", "1000000"], "max_length"),
        (["generate", "--model", "PRESET", "--prompt", "hi", "--sampler", "nucleus"], "Unknown sampler"),
        (["finetune-text", "--model", "PRESET", "--text", "/no/file.txt", "--out", "OUT"], "Text file not found"),
    ],
)
def test_cli_text_bad_input_exits_2(tiny_gpt2_preset, tmp_path, args, fragment):
    args = [str(tiny_gpt2_preset) if a == "PRESET" else str(tmp_path / "out") if a == "OUT" else a for a in args]
    assert_clean_failure(tlcore(*args), fragment)
