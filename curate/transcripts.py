"""Conversations written as one text — `\\n\\nHuman: …\\n\\nAssistant: …`, the shape of
Anthropic's hh-rlhf and the sets made from it — split into turns, and the checks that catch
one read as a single turn.

A preference row whose `chosen` and `rejected` are such transcripts (and no `prompt`) is
the shared conversation up to the last `Assistant:` as its prompt turns, and each side's last
answer; a `text` row that is one becomes a chat row. Afterwards (`wrong_turns`) a row with no
user turn, or an answer that still holds a role marker, is rejected with a reason of its
own (`no_user_turn`, `role_marker_in_answer`), never trained as one long answer.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# a transcript starts with a human turn and has an assistant turn after it
TRANSCRIPT = r"(?s)^\s*(?:Human|User):\s.*\n\n?Assistant:"
_TURN = re.compile(r"(?:^\s*|\n\n?)(Human|User|Assistant):[ \t]?")
ROLE_MARKER = r"\n\n(?:Human|Assistant):"
ROLES = {"Human": "user", "User": "user", "Assistant": "assistant"}


def is_transcript(values: pa.Array) -> np.ndarray:
    """Which strings of a column are written transcripts (vectorized)."""
    found = pc.match_substring_regex(values.cast(pa.string()), TRANSCRIPT)
    return pc.fill_null(found, False).to_numpy(zero_copy_only=False)


def split(text: str) -> list[dict[str, str]]:
    """A transcript's turns, in order: {role, content}, content stripped."""
    marks = list(_TURN.finditer(text))
    turns = []
    for m, nxt in zip(marks, [*marks[1:], None], strict=True):
        end = nxt.start() if nxt is not None else len(text)
        turns.append({"role": ROLES[m.group(1)], "content": text[m.end() : end].strip()})
    return turns


def preference(chosen: str, rejected: str) -> tuple[list, list, list] | str:
    """(prompt turns, [chosen answer], [rejected answer]) of a pair of transcripts, or why
    they are not one: they must end in an answer and share every turn before it."""
    a, b = split(chosen), split(rejected)
    if not a or not b or a[-1]["role"] != "assistant" or b[-1]["role"] != "assistant":
        return "a transcript that does not end in an Assistant turn"
    if a[:-1] != b[:-1]:
        return "chosen and rejected transcripts differ before their last answer"
    return a[:-1], a[-1:], b[-1:]


def wrong_turns(messages: pa.Array, answers: list[pa.Array]) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a MESSAGES column: no user turn (a row that has turns); and an assistant
    turn — in `messages` or in the answer columns (`chosen`, `rejected`) — that holds
    `\n\nHuman:` / `\n\nAssistant:`, a transcript read as one answer."""
    n = len(messages)
    lengths = _lengths(messages)
    owner = np.repeat(np.arange(n), lengths)
    user = pc.fill_null(pc.equal(messages.flatten().field("role"), "user"), False)
    users = np.bincount(owner[user.to_numpy(zero_copy_only=False)], minlength=n)
    marked = np.zeros(n, dtype=bool)
    for column in [messages, *answers]:
        if column.null_count == len(column):
            continue
        flat = column.flatten()
        rows = np.repeat(np.arange(n), _lengths(column))
        hit = pc.and_(
            pc.fill_null(pc.equal(flat.field("role"), "assistant"), False),
            pc.fill_null(pc.match_substring_regex(flat.field("content"), ROLE_MARKER), False),
        ).to_numpy(zero_copy_only=False)
        marked[rows[hit]] = True
    answered = lengths > 0  # a row with turns, or a pair with answers, has something asked
    for column in answers:
        answered |= column.is_valid().to_numpy(zero_copy_only=False)
    return (users == 0) & answered, marked


def _lengths(column: pa.Array) -> np.ndarray:
    """Turns per row (a null row: none), as `flatten` lays them out."""
    return pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
