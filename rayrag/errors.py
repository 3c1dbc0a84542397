"""The project's exception hierarchy.

Every error a user can cause derives from `RayRagError`; the CLI turns one into a single
line on stderr and exit code 2. Messages name the bad value and the flag or key, and never
carry document, question or answer text (they may leave the process).
"""

from __future__ import annotations


class RayRagError(Exception):
    """Base class: something the user can fix (bad input, bad config, missing file)."""


class ConfigError(RayRagError):
    """A configuration value is invalid or a config file cannot be read."""


class DataError(RayRagError):
    """Input data is malformed: a bad corpus line, an empty file, a wrong format."""


class BundleError(RayRagError):
    """An index bundle is missing, corrupt, or incompatible with the config."""


class AccessDenied(RayRagError):
    """A principal asked for something its groups do not allow."""


class RedactionError(RayRagError):
    """PII redaction could not run (engine, key or operator problem)."""


class ModelError(RayRagError):
    """A generator checkpoint or tokenizer is missing or incompatible."""


class ShardFailure(RayRagError):
    """An expert shard died and could not be brought back within one retry
    (the serve graph's 503)."""


class GeneratorUnavailable(RayRagError):
    """The generator backend (`generator.backend: openai`) cannot answer now: unreachable,
    timing out, or 429/5xx after its retries, or not at its address (404). The serve graph's
    503; messages carry status codes and counts, never the request or the key."""


class GeneratorRejected(RayRagError):
    """The generator backend refused the request (a 4xx other than 404 and 429: a bad key, a
    prompt too long) or answered something that is not a chat completion. The serve graph's
    502: retrying does not help, the operator must look at `generator.openai`."""


def user_error_in(exc: BaseException) -> RayRagError | None:
    """A RayRagError raised inside a Ray actor arrives wrapped; find it so the CLI can
    print its one line instead of a remote traceback."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        # ray.get raises a RayTaskError subclassing the user's error class; its args are
        # Ray's traceback, and the user's error is its `cause`.
        if isinstance(current, RayRagError) and not isinstance(
            getattr(current, "cause", None), BaseException
        ):
            return type(current)(*current.args)
        stack.extend([getattr(current, "cause", None), current.__cause__, current.__context__])
    return None
