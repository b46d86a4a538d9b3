"""protocol.py: frame parsing and validation, with no I/O."""

from __future__ import annotations

import uuid

import orjson
import pytest

from leaderboard.protocol import (
    FrameError,
    PingFrame,
    Submission,
    SubmitFrame,
    SubscribeFrame,
    error_frame,
    parse_frame,
)


def test_submit_frame_round_trip() -> None:
    sid = uuid.uuid4()
    frame = parse_frame(
        orjson.dumps({"type": "submit", "ref": 7, "user_id": "a.b@c", "score": -5, "session_id": str(sid)})
    )
    assert isinstance(frame, SubmitFrame)
    assert isinstance(frame, Submission)  # the writer takes the frame as it is
    assert (frame.user_id, frame.score, frame.board, frame.session_id, frame.ref) == ("a.b@c", -5, "global", sid, 7)


@pytest.mark.parametrize(
    ("raw", "code", "ref"),
    [
        (b"{nope", "invalid_json", None),
        (b"[1,2]", "invalid_frame", None),
        (b'{"ref": 3}', "invalid_frame", 3),
        (b'{"type": 5, "ref": "x"}', "invalid_frame", "x"),
        (b'{"type": "dance", "ref": "r"}', "unknown_type", "r"),
        (b'{"type": "submit", "ref": 1, "user_id": "a", "score": "10"}', "validation_error", 1),
        (b'{"type": "submit", "ref": 1, "user_id": "a", "score": 1.5}', "validation_error", 1),
        (b'{"type": "submit", "ref": 1, "user_id": "a", "score": true}', "validation_error", 1),
        (b'{"type": "submit", "ref": 1, "user_id": "a b", "score": 1}', "validation_error", 1),
        (b'{"type": "submit", "ref": 1, "user_id": "a", "score": 9007199254740992}', "validation_error", 1),
        (b'{"type": "submit", "ref": 1, "user_id": "a", "score": 1, "board": "Bad!"}', "validation_error", 1),
        (b'{"type": "submit", "ref": 1, "user_id": "a", "score": 1, "extra": 1}', "validation_error", 1),
        (b'{"type": "submit", "ref": 1, "user_id": "a", "score": 1, "session_id": "nope"}', "validation_error", 1),
        (b'{"type": "subscribe", "ref": 2, "topics": []}', "validation_error", 2),
        (b'{"type": "subscribe", "ref": 2, "topics": ["rank"]}', "validation_error", 2),
        (b'{"type": "subscribe", "ref": 2, "topics": ["top"], "limit": 101}', "validation_error", 2),
        (b'{"type": "subscribe", "ref": 2, "topics": ["gossip"]}', "validation_error", 2),
        (b'{"type": "auth", "ref": 2}', "validation_error", 2),
    ],
)
def test_bad_frames_are_refused_with_a_code_and_the_ref(raw: bytes, code: str, ref: object) -> None:
    with pytest.raises(FrameError) as info:
        parse_frame(raw)
    assert info.value.code == code
    assert info.value.ref == ref
    assert info.value.detail


def test_an_overlong_ref_is_not_echoed() -> None:
    with pytest.raises(FrameError) as info:
        parse_frame(orjson.dumps({"type": "dance", "ref": "x" * 65}))
    assert info.value.ref is None


def test_subscribe_defaults() -> None:
    frame = parse_frame(b'{"type": "subscribe", "topics": ["top"]}')
    assert isinstance(frame, SubscribeFrame)
    assert (frame.board, frame.limit, frame.user_id) == ("global", 10, None)
    assert isinstance(parse_frame(b'{"type": "ping"}'), PingFrame)


def test_error_frame_is_json_text() -> None:
    assert orjson.loads(error_frame("unknown_type", "no", 3)) == {
        "type": "error",
        "ref": 3,
        "code": "unknown_type",
        "detail": "no",
    }


@pytest.mark.parametrize(("score", "taken"), [(120.0, 120), (-287.0, -287), (0.0, 0), (2.0**52, 2**52)])
def test_an_integral_number_is_an_integer_score(score: float, taken: int) -> None:
    """JSON Schema's "integer" (our OpenAPI) includes 120.0; so does the server."""
    from leaderboard.protocol import Submission

    sub = Submission.model_validate({"user_id": "u", "score": score})
    assert sub.score == taken and type(sub.score) is int


@pytest.mark.parametrize("score", [120.5, "120", True, 2.0**53, float("inf")])
def test_other_numbers_are_not_scores(score: object) -> None:
    from pydantic import ValidationError

    from leaderboard.protocol import Submission

    with pytest.raises(ValidationError):
        Submission.model_validate({"user_id": "u", "score": score})


@pytest.mark.parametrize("text", ["a\x00b", " ", "\u3000\t", "Al\x1c", "\u202eevil Admin", "x\u2066y"])
def test_free_text_is_not_blank_and_has_no_control_or_bidi_characters(text: str) -> None:
    """Postgres text cannot hold NUL (it answered 503 'database unavailable' before); blank is not a name; a
    bidirectional override makes a name render as another."""
    from pydantic import ValidationError

    from leaderboard.protocol import BoardCreate, Submission

    with pytest.raises(ValidationError):
        Submission.model_validate({"user_id": "u", "score": 1, "display_name": text})
    with pytest.raises(ValidationError):
        BoardCreate.model_validate({"id": "b", "title": text})
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # zero-width joiners: one emoji, allowed
    assert Submission.model_validate({"user_id": "u", "score": 1, "display_name": f" Al {family} "}).display_name == (
        f"Al {family}"
    )
