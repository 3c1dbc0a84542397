"""The Ingress's request handling that needs no running graph: error mapping and ids."""

from __future__ import annotations

import asyncio

import pytest

from rayrag.errors import AccessDenied, DataError, ShardFailure
from rayrag.serve.auth import AuthError
from rayrag.serve.errors import HTTPFailure, classify_error
from rayrag.serve.schemas import AskRequest, ChatCompletionRequest, request_id, validation_message

SECRET = "Did PERSON_1234 leave the company?"


@pytest.mark.parametrize(
    ("exc", "status", "kind"),
    [
        (HTTPFailure(413, "request_too_large", "too long"), 413, "request_too_large"),
        (AuthError("no key"), 401, "unauthorized"),
        (AccessDenied(SECRET), 403, "forbidden"),
        (asyncio.TimeoutError(), 503, "timeout"),
        (ShardFailure(SECRET), 503, "unavailable"),
        (DataError(SECRET), 400, "invalid_request"),
        (ValueError(SECRET), 500, "internal_error"),
        (KeyError(SECRET), 500, "internal_error"),
    ],
)
def test_errors_map_to_a_status_and_never_carry_the_request(exc, status, kind):
    got_status, got_kind, message = classify_error(exc)
    assert (got_status, got_kind) == (status, kind)
    assert SECRET not in message and "Traceback" not in message


def test_request_ids_are_honoured_only_when_they_look_like_ids():
    assert request_id("req-42") == "req-42"
    for bad in (None, "", SECRET, "x" * 65, "a\nb"):
        rid = request_id(bad)
        assert rid != bad and len(rid) == 32


def test_validation_messages_name_the_field_not_the_value():
    with pytest.raises(Exception) as info:
        AskRequest.model_validate({"question": SECRET, "top_k": "many"})
    message = validation_message(info.value)
    assert (
        message.startswith("invalid request: top_k")
        and SECRET not in message
        and "many" not in message
    )


def test_a_chat_request_asks_its_last_user_message():
    chat = ChatCompletionRequest.model_validate(
        {
            "model": "rayrag",
            "n": 1,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "..."},
                {"role": "user", "content": "second"},
            ],
            "max_tokens": 5,
        }
    )
    assert chat.question() == "second" and chat.token_cap() == 5
    with pytest.raises(ValueError, match="non-empty user message"):
        ChatCompletionRequest.model_validate(
            {"messages": [{"role": "system", "content": "x"}]}
        ).question()
