"""The OpenAI request shapes, checked without a server: content parts, history, stop strings
(whole and streamed), and what is refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rayrag.serve.errors import HTTPFailure
from rayrag.serve.openai_compat import StopCutter, chat_turn, cut_at_stop, refusal
from rayrag.serve.schemas import ChatCompletionRequest


def request(**body) -> ChatCompletionRequest:
    return ChatCompletionRequest(**{"messages": [{"role": "user", "content": "Who?"}], **body})


def test_text_parts_are_joined_and_other_parts_refused_by_type():
    parts = [{"type": "text", "text": "Which company"}, {"type": "text", "text": "acquired it?"}]
    assert request(messages=[{"role": "user", "content": parts}]).question() == (
        "Which company\nacquired it?"
    )
    image = [{"type": "image_url", "image_url": {"url": "data:,"}}, {"type": "text", "text": "x"}]
    with pytest.raises(ValueError, match="only text content parts are supported, got image_url"):
        request(messages=[{"role": "user", "content": image}]).question()
    odd = [{"type": "my secret text"}]
    with pytest.raises(ValueError, match="got other$"):
        request(messages=[{"role": "user", "content": odd}]).question()


def test_history_is_the_turns_before_the_last_question():
    body = request(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Which company acquired Avenra Logistics?"},
            {"role": "assistant", "content": "Helix Corp"},
            {"role": "user", "content": "In what year was it founded?"},
        ]
    )
    assert body.question() == "In what year was it founded?"
    assert body.history() == [
        ("user", "Which company acquired Avenra Logistics?"),
        ("assistant", "Helix Corp"),
    ]
    turn = chat_turn(body)
    assert turn.question == "In what year was Helix Corp founded?" and turn.rewritten


def test_stop_takes_a_long_string_or_up_to_four_strings():
    assert request(stop="\n\nUser:").stops() == ["\n\nUser:"]
    assert request(stop=["a", "", "b"]).stops() == ["a", "b"]
    with pytest.raises(ValidationError):
        request(stop=["a", "b", "c", "d", "e"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"n": 2}, "n"),
        ({"temperature": 0.7}, "temperature"),
        ({"top_p": 0.9}, "top_p"),
    ],
)
def test_sampling_and_several_answers_are_refused_naming_the_field(body, field):
    assert refusal(request(**body))[0] == field
    with pytest.raises(HTTPFailure) as failure:
        chat_turn(request(**body))
    assert failure.value.status == 400 and failure.value.param == field


def test_greedy_settings_pass():
    assert refusal(request(n=1, temperature=0, top_p=1)) is None


def test_the_answer_is_cut_at_the_first_stop_string():
    assert cut_at_stop("Helix Corp. [1] Other", ("[", ".")) == ("Helix Corp", True)
    assert cut_at_stop("Helix Corp", ("END",)) == ("Helix Corp", False)


@pytest.mark.parametrize("pieces", [["Helix", " Co", "rp EN", "D more"], ["Helix Corp", "END"]])
def test_a_stream_is_cut_at_a_stop_string_split_across_pieces(pieces):
    cutter = StopCutter(("END",))
    sent = "".join(cutter.feed(p) for p in pieces) + cutter.flush()
    assert sent == cut_at_stop("".join(pieces), ("END",))[0] and cutter.done


def test_a_stream_without_a_stop_is_sent_whole():
    cutter = StopCutter(("END",))
    pieces = ["Hel", "ix", " Corp E", "N"]
    sent = "".join(cutter.feed(p) for p in pieces) + cutter.flush()
    assert sent == "Helix Corp EN" and not cutter.done
