"""Turn detection, a setting of each session as OpenAI Realtime's ``turn_detection`` has it:
server VAD with a silence duration and a pre-roll, or manual (only ``audio.commit`` ends a turn).
"""

import numpy as np
import pytest

from sessions_app.audio.turns import TurnDetection, TurnDetectionError, parse
from sessions_app.audio.vad import Segmenter
from tests.conftest import connect, create_session, receive_until
from tests.test_speech import FAST, final_for, last_sound, load, stream

pytestmark = pytest.mark.django_db(databases=[])

BYTES_PER_MS = 32  # 16 kHz PCM16


def _events(segmenter: Segmenter, audio: bytes) -> list[tuple[str, int, bytes | None]]:
    """(kind, byte offset after the frame that produced it, data) for each segmenter event."""
    out = []
    for offset in range(0, len(audio), 640):
        for kind, data in segmenter.feed(audio[offset : offset + 640]):
            out.append((kind, offset + 640, data))
    return out


# the setting ---------------------------------------------------------------------------------
def test_server_vad_settings_are_taken_as_given():
    turns = parse({"type": "server_vad", "silence_duration_ms": 450, "prefix_padding_ms": 120})
    assert (turns.mode, turns.silence_duration_ms, turns.prefix_padding_ms) == (
        "server_vad",
        450,
        120,
    )
    assert parse({"type": "server_vad"}).as_dict()["type"] == "server_vad"


def test_null_and_type_none_both_mean_manual_turns():
    assert parse(None).manual and parse({"type": "none"}).manual
    assert parse(None).as_dict() == {"type": "none"}


def test_openai_response_flags_are_accepted_and_change_nothing():
    given = {"type": "server_vad", "create_response": True, "interrupt_response": False}
    assert parse(given) == parse({"type": "server_vad"})


@pytest.mark.parametrize(
    "config",
    [
        [],
        "server_vad",
        {},
        {"type": "semantic_vad"},
        {"type": "server_vad", "silence_duration_ms": True},
        {"type": "server_vad", "silence_duration_ms": 450.5},
        {"type": "server_vad", "silence_duration_ms": "450"},
        {"type": "server_vad", "silence_duration_ms": 0},
        {"type": "server_vad", "silence_duration_ms": 60_000},
        {"type": "server_vad", "prefix_padding_ms": -30},
        {"type": "server_vad", "prefix_padding_ms": 5000},
        {"type": "server_vad", "threshold": 1.5},
        {"type": "server_vad", "threshold": float("nan")},
        {"type": "server_vad", "silence": 300},
        {"type": "none", "silence_duration_ms": 300},
    ],
)
def test_a_bad_turn_detection_is_refused_with_a_reason(config):
    with pytest.raises(TurnDetectionError, match="turn_detection"):
        parse(config)


# the segmenter ---------------------------------------------------------------------------------
def test_a_longer_silence_duration_ends_the_turn_that_much_later():
    audio = load("what_is_on_my_list")  # ~1.4 s of silence after the speech
    stops = {}
    for silence in (300, 900):
        events = _events(
            Segmenter(parse({"type": "server_vad", "silence_duration_ms": silence})), audio
        )
        stops[silence] = [offset for kind, offset, _ in events if kind == "stop"]
        assert len(stops[silence]) == 1
    later_ms = (stops[900][0] - stops[300][0]) / BYTES_PER_MS
    assert 600 - 40 <= later_ms <= 600 + 40


@pytest.mark.parametrize(
    "clip", ["remind_buy_milk_tomorrow", "add_milk_to_my_list", "create_a_task_fix_the_bike"]
)
def test_the_silence_is_counted_from_the_last_sound_not_from_the_vads_hangover(clip):
    """WebRTC's VAD holds "speech" for 90-200 ms after the last sound; a turn that ends after
    300 ms of silence must end about 300 ms after the speaker's last audible sample."""
    audio = load(clip)
    sound_ends = last_sound(audio) * 2  # in bytes
    events = _events(Segmenter(parse({"type": "server_vad", "silence_duration_ms": 300})), audio)
    (stop,) = [offset for kind, offset, _ in events if kind == "stop"]
    assert 300 - 30 <= (stop - sound_ends) / BYTES_PER_MS <= 300 + 50  # 30 ms VAD frames


def test_the_prefix_padding_is_the_audio_kept_from_before_the_start():
    audio = load("confirm")  # 300 ms of silence before the speech
    for prefix in (0, 150, 300):
        segmenter = Segmenter(parse({"type": "server_vad", "prefix_padding_ms": prefix}))
        starts = [data for kind, _, data in _events(segmenter, audio) if kind == "start"]
        assert len(starts) == 1
        assert len(starts[0]) == prefix * BYTES_PER_MS


def test_manual_turns_never_end_on_silence():
    speech = load("confirm")
    silence = np.zeros(16000 * 5, dtype=np.int16).tobytes()
    kinds = [
        kind for kind, _, _ in _events(Segmenter(TurnDetection(mode="none")), speech + silence)
    ]
    assert kinds[0] == "start" and "stop" not in kinds


def test_switching_to_manual_mid_speech_keeps_the_turn_open():
    segmenter = Segmenter()
    audio = load("confirm")
    half = len(audio) // 2 // 640 * 640
    kinds = [kind for kind, _, _ in _events(segmenter, audio[:half])]
    assert "start" in kinds and "stop" not in kinds
    segmenter.configure(parse(None))
    kinds = [kind for kind, _, _ in _events(segmenter, audio[half:] + b"\x00" * 32000 * 3)]
    assert "stop" not in kinds
    assert segmenter.in_speech


# on the socket ----------------------------------------------------------------------------------
async def test_session_ready_reports_the_default_turn_detection(api):
    comm, ready = await connect(create_session(api))
    assert ready["turn_detection"] == {
        "type": "server_vad",
        "silence_duration_ms": 800,
        "prefix_padding_ms": 300,
        "threshold": 0.5,
        "command_end": True,
    }
    await comm.disconnect()


async def test_session_update_sets_turn_detection_and_refuses_a_bad_one(api):
    comm, _ = await connect(create_session(api))
    wanted = {"type": "server_vad", "silence_duration_ms": 400, "prefix_padding_ms": 210}
    await comm.send_json_to({"type": "session.update", "turn_detection": wanted})
    ready = await comm.receive_json_from(timeout=5)
    assert ready["type"] == "session.ready"
    assert {k: ready["turn_detection"][k] for k in wanted} == wanted
    bad = {"type": "server_vad", "silence_duration_ms": -1}
    await comm.send_json_to({"type": "session.update", "turn_detection": bad})
    error = await comm.receive_json_from(timeout=5)
    assert (error["type"], error["code"]) == ("error", "bad_turn_detection")
    assert "silence_duration_ms" in error["message"]
    await comm.send_json_to({"type": "session.update", "timezone": "Europe/Berlin"})
    ready = await comm.receive_json_from(timeout=5)
    assert ready["turn_detection"]["silence_duration_ms"] == 400, "the bad one changed nothing"
    await comm.disconnect()


@FAST
async def test_in_manual_mode_only_audio_commit_ends_the_turn(api):
    comm, _ = await connect(create_session(api))
    await comm.send_json_to({"type": "session.update", "turn_detection": None})
    assert (await comm.receive_json_from(timeout=5))["turn_detection"] == {"type": "none"}
    await stream(comm, load("what_is_on_my_list") + b"\x00" * 32000 * 2)
    await comm.send_json_to({"type": "ping"})
    heard = await receive_until(comm, "pong")
    assert "speech.started" in [e["type"] for e in heard]
    assert not {"speech.stopped", "transcript.final"} & {e["type"] for e in heard}
    while not await comm.receive_nothing(timeout=1.5):  # partials may still come
        heard.append(await comm.receive_json_from())
    ended = {"speech.stopped", "transcript.final"} & {e["type"] for e in heard}
    assert not ended, "2 s of silence did not end the turn"
    await comm.send_json_to({"type": "audio.commit"})
    events = await final_for(comm, timeout=60)
    assert "speech.stopped" in [e["type"] for e in events]
    assert events[-1]["text"] == "what is on my list"
    await comm.disconnect()


# ending a turn early on a whole command -------------------------------------------------------
@pytest.mark.parametrize(
    ("said", "ends"),
    [
        ("what is on my list", "closed"),
        ("add eggs to my list", "closed"),
        ("cancel the last task", "closed"),
        ("confirm", "closed"),
        ("yes", "closed"),
        ("yes please", "closed"),
        ("create a task to grade the essays", "open"),
        ("remind me to call mom tomorrow", "open"),
        ("take a note the projector is broken", "open"),
        ("remind me to", None),
        ("remind me to call mom at", None),
        ("create a task to grade the", None),
        ("add eggs to", None),
        ("take a note", None),
        ("create a task", None),
        ("add", None),
        ("what do i have", None),
        ("the weather is nice", "open"),
        ("paper", "open"),
        ("", None),
    ],
)
def test_words_that_cannot_be_a_whole_sentence_wait_for_the_full_silence(said, ends):
    """A whole command ends soonest; a whole sentence that is no command (or a misheard one)
    soon; words a sentence does not end on, or a command's opening words only, wait."""
    from sessions_app.audio.endpointing import CLOSED_MS, OPEN_MS, silence_needed

    assert CLOSED_MS < OPEN_MS < parse({"type": "server_vad"}).silence_duration_ms
    assert silence_needed(said) == {"closed": CLOSED_MS, "open": OPEN_MS, None: None}[ends]


def _stop_offset(segmenter: Segmenter, audio: bytes, *, on_pause=None) -> int | None:
    for offset in range(0, len(audio), 640):
        for kind, _ in segmenter.feed(audio[offset : offset + 640]):
            if kind == "pause" and on_pause is not None:
                on_pause(segmenter)
            if kind == "stop":
                return offset + 640
    return None


def test_a_whole_command_ends_after_the_shorter_silence_and_going_on_cancels_it():
    audio = load("what_is_on_my_list")
    turns = parse({"type": "server_vad", "silence_duration_ms": 1200})
    full = _stop_offset(Segmenter(turns), audio)
    early = _stop_offset(Segmenter(turns), audio, on_pause=lambda s: s.end_after(240))
    assert full is not None and early is not None
    assert 1200 - 240 - 60 <= (full - early) / BYTES_PER_MS <= 1200 - 240 + 60
    off = parse({"type": "server_vad", "silence_duration_ms": 1200, "command_end": False})
    assert _stop_offset(Segmenter(off), audio, on_pause=lambda s: s.end_after(240)) == full


def test_speech_after_a_pause_waits_for_the_full_silence_again():
    speech = load("confirm")[: 16000 * 2 * 11 // 10]  # 0.3 s lead-in, the word, a little tail
    pause = b"\x00" * (16000 * 2 * 3 // 10)  # 300 ms: longer than a pause, shorter than 800
    segmenter = Segmenter()
    stopped = _stop_offset(
        segmenter, speech + pause + speech[9600:] + b"\x00" * 32000, on_pause=lambda s: None
    )
    assert stopped is not None
    segmenter = Segmenter()
    calls = []

    def judge_once(s):  # the first pause reads as a whole command, then the speaker goes on
        if not calls:
            s.end_after(600)
        calls.append(1)

    audio = speech + pause + speech[9600:] + b"\x00" * 32000
    assert _stop_offset(segmenter, audio, on_pause=judge_once) == stopped, (
        "the early end was dropped when speech went on"
    )


@FAST
async def test_a_spoken_whole_command_ends_its_turn_before_the_sessions_silence(api):
    from django.test import override_settings

    comm, _ = await connect(create_session(api))
    with override_settings(RECOGNIZER_IDLE_SECONDS=120):
        await comm.send_json_to(
            {
                "type": "session.update",
                "turn_detection": {"silence_duration_ms": 5000, "type": "server_vad"},
            }
        )
        await comm.receive_json_from(timeout=5)
        audio = load("what_is_on_my_list") + b"\x00" * 32000 * 2  # 3.4 s of silence after it
        await stream(comm, audio, seconds_per_frame=0.02)  # real time: partials keep up
        events = await final_for(comm, timeout=60)
        assert events[-1]["text"] == "what is on my list"
    await comm.disconnect()
