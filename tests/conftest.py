import contextlib
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.helpers import make_colour_dataset  # noqa: E402


def pytest_addoption(parser):
    parser.addoption(
        "--shared-dir", default=None, help="path of the shared assets (default: $TL_SHARED_DIR or ../shared)"
    )


@pytest.fixture(scope="session")
def shared_dir(request) -> Path:
    """The shared assets folder. Under CI=true a missing folder fails the test, never skips it."""
    configured = request.config.getoption("--shared-dir") or os.environ.get("TL_SHARED_DIR")
    path = Path(configured) if configured else ROOT.parent / "shared"
    return path.resolve()


def require(path: Path) -> Path:
    """Returns ``path`` if it exists; otherwise fails (CI) or skips with the reason (elsewhere)."""
    if path.exists():
        return path
    message = f"shared asset missing: {path} (set TL_SHARED_DIR or --shared-dir)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def hymenoptera(shared_dir) -> Path:
    return require(shared_dir / "data" / "hymenoptera")


@pytest.fixture(scope="session")
def dog_model(shared_dir) -> Path:
    return require(shared_dir / "pretrained" / "dog_breed_mobilenetv2_160.h5")


@pytest.fixture(scope="session")
def gpt2_tokenizer_dir(shared_dir) -> Path:
    return require(shared_dir / "gpt2-tokenizer")


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path_factory, monkeypatch):
    """Every test gets its own feature cache and run store; nothing touches ~/.cache."""
    cache = tmp_path_factory.mktemp("tlcore-cache")
    monkeypatch.setenv("TLCORE_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(scope="session")
def colour_dataset(tmp_path_factory) -> Path:
    return make_colour_dataset(tmp_path_factory.mktemp("colours"))


@contextlib.contextmanager
def own_cache(tmp_path_factory):
    """A cache folder for session fixtures (the autouse one is per test)."""
    previous = os.environ.get("TLCORE_CACHE_DIR")
    os.environ["TLCORE_CACHE_DIR"] = str(tmp_path_factory.mktemp("session-cache"))
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TLCORE_CACHE_DIR")
        else:
            os.environ["TLCORE_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory) -> Path:
    """The real demo dataset, generated once for the session."""
    from tlcore.data.demo import make_demo_dataset

    with own_cache(tmp_path_factory):
        return make_demo_dataset()


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, colour_dataset):
    """A finished run (SmallCNN, frozen random weights, colour classes) in its own run store."""
    from tlcore.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from tlcore.runs.store import RunStore, read_run
    from tlcore.training.launch import train_run

    store = RunStore(tmp_path_factory.mktemp("runs"))
    config = RunConfig(
        DataConfig(str(colour_dataset), val_split=0.25),
        ModelConfig("SmallCNN", weights="none", image_size=32),
        TrainConfig(epochs=10, batch_size=8, learning_rate=0.1, early_stopping_patience=0, seed=1),
    )
    with own_cache(tmp_path_factory):
        run_dir = store.create(config, name="colours")
        train_run(config, run_dir)
    return read_run(run_dir)


@pytest.fixture(scope="session")
def tiny_gpt2_preset(tmp_path_factory, gpt2_tokenizer_dir) -> Path:
    """A tiny GPT-2 (2 layers, 32 wide) with the real GPT-2 tokenizer, saved as a local preset."""
    from tlcore.text.models import build_gpt2, build_tokenizer

    tokenizer = build_tokenizer(gpt2_tokenizer_dir / "encoder.json", gpt2_tokenizer_dir / "vocab.bpe")
    model = build_gpt2(
        tokenizer,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        intermediate_dim=64,
        max_sequence_length=64,
        sequence_length=32,
    )
    path = tmp_path_factory.mktemp("tiny-gpt2")
    model.save_to_preset(str(path))
    return path


@pytest.fixture(scope="session")
def photo_run(tmp_path_factory, hymenoptera, dog_model):
    """A run trained on photos: ants vs bees on the pretrained dog-breed MobileNetV2, frozen."""
    from tlcore.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from tlcore.runs.store import RunStore, read_run
    from tlcore.training.launch import train_run

    store = RunStore(tmp_path_factory.mktemp("photo-runs"))
    config = RunConfig(
        DataConfig(str(hymenoptera / "train"), val_dir=str(hymenoptera / "val")),
        ModelConfig(str(dog_model), weights="none"),
        TrainConfig(epochs=10, seed=1),
    )
    with own_cache(tmp_path_factory):
        run_dir = store.create(config, name="ants-bees")
        train_run(config, run_dir)
    return read_run(run_dir)
