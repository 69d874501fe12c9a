"""A reply's prompt IDs and captured IDs in the database, once per turn rather than once per reply.

Each turn's prompt is the whole conversation so far, so storing it whole made
a conversation's size grow with the square of its length. Here a reply row
(in ``messages`` or ``branches``) keeps three columns:

``prompt_base``
    the position (in the same conversation) of the ``messages`` row whose
    prompt this one starts from: the nearest earlier one with a prompt.
    NULL: the prompt is stored whole (the first turn, or nothing shared).
``prompt``
    ``idlists`` blob: how many IDs of that base prompt it keeps, then the
    IDs it adds (the previous reply and the new message). NULL: no prompt.
``captured``
    ``idlists`` blob against this row's own prompt: an engine that received
    the prompt as sent costs two bytes (keep = its length, nothing added); a
    cached prefix or a difference keeps the shared part and adds the rest,
    so what is read back is always exactly what was captured.

A base is always an earlier position, so a turn's other replies (branches)
and the reply in place share one base and can swap rows as they are; and a
conversation copied row for row (positions kept) reads back the same. When
a row that others start from changes its prompt (a reply reset or swapped
for a branch), those others are read whole first and written again after
(``keeping_dependents``): nothing ever points at IDs that changed.
"""

from __future__ import annotations

import sqlite3
from array import array
from contextlib import contextmanager
from typing import Iterator

from backends.core.sequences import common_prefix
from backends.storage import idlists

#: The columns of a reply row that hold its IDs, in this order everywhere.
COLUMNS = ("prompt_base", "prompt", "captured")


def encode(prompt, captured, base_position: int | None, base_ids: array | None) -> tuple:
    """The three column values for a reply's ``prompt`` and ``captured`` IDs (lists or None),
    given the nearest earlier prompt (its position and IDs)."""
    if prompt is None:
        return None, None, None if captured is None else idlists.encode(captured, None)
    wide = idlists.as_wide(prompt)
    keep = common_prefix(wide, base_ids) if base_ids is not None else 0
    blob = idlists.pack(keep, wide[keep:])
    captured_blob = None if captured is None else idlists.encode(captured, wide)
    return (base_position if keep else None), blob, captured_blob


def decode_prompt(row, bases: dict[int, array]) -> array | None:
    """A row's prompt, as the array later rows start from; ``bases`` holds the prompts of the
    conversation's earlier ``messages`` rows by position."""
    if row["prompt"] is None:
        return None
    base = row["prompt_base"]
    return idlists.decode(row["prompt"], bases.get(base) if base is not None else None)


def decode(row, bases: dict[int, array]) -> tuple[array | None, list[int] | None, list[int] | None]:
    """A row's prompt (as an array, for the rows after it) and its prompt and captured IDs as lists."""
    prompt = decode_prompt(row, bases)
    captured = None if row["captured"] is None else idlists.decode(row["captured"], prompt).tolist()
    return prompt, None if prompt is None else prompt.tolist(), captured


def prompts_until(db: sqlite3.Connection, conv_id: int, position: int) -> dict[int, array]:
    """The prompts of the conversation's ``messages`` rows up to ``position``, rebuilt in order."""
    bases: dict[int, array] = {}
    for row in db.execute("SELECT position, prompt_base, prompt FROM messages"
                          " WHERE conversation_id = ? AND position <= ? AND prompt IS NOT NULL"
                          " ORDER BY position", (conv_id, position)):
        bases[row["position"]] = decode_prompt(row, bases)
    return bases


def base_for(db: sqlite3.Connection, conv_id: int, position: int) -> tuple[int | None, array | None]:
    """The prompt a reply at ``position`` starts from: the nearest earlier one (position, IDs)."""
    row = db.execute("SELECT position FROM messages WHERE conversation_id = ? AND position < ?"
                     " AND prompt IS NOT NULL ORDER BY position DESC LIMIT 1", (conv_id, position)).fetchone()
    if row is None:
        return None, None
    base = row["position"]
    return base, prompts_until(db, conv_id, base)[base]


def encode_at(db: sqlite3.Connection, conv_id: int, position: int, prompt, captured) -> tuple:
    """The three column values for a reply at ``position`` of ``conv_id``."""
    if prompt is None:
        return encode(None, captured, None, None)
    return encode(prompt, captured, *base_for(db, conv_id, position))


def ids_of(db: sqlite3.Connection, table: str, row_id: int) -> tuple[list[int] | None, list[int] | None]:
    """One reply row's prompt and captured IDs, whole."""
    if table == "messages":
        sql = ("SELECT conversation_id, position, prompt_base, prompt, captured FROM messages WHERE id = ?")
    else:
        sql = ("SELECT m.conversation_id, m.position, b.prompt_base, b.prompt, b.captured FROM branches b"
               " JOIN messages m ON m.id = b.message_id WHERE b.id = ?")
    row = db.execute(sql, (row_id,)).fetchone()
    if row is None:
        return None, None
    bases = {}
    if row["prompt_base"] is not None:
        bases = prompts_until(db, row["conversation_id"], row["prompt_base"])
    _, prompt, captured = decode(row, bases)
    return prompt, captured


@contextmanager
def keeping_dependents(db: sqlite3.Connection, conv_id: int, position: int) -> Iterator[None]:
    """Around a change of the prompt at ``position``: the rows that start from it are read whole
    before and written again after, against whatever prompt comes before them then."""
    rows = db.execute(
        "SELECT 'messages' AS source, id, position FROM messages WHERE conversation_id = ? AND prompt_base = ?"
        " UNION ALL SELECT 'branches', b.id, m.position FROM branches b JOIN messages m ON m.id = b.message_id"
        " WHERE m.conversation_id = ? AND b.prompt_base = ?", (conv_id, position, conv_id, position)).fetchall()
    # In position order, the reply in place before its branches: each is written again only after
    # every earlier row it could start from holds its IDs in the new form.
    rows = sorted(rows, key=lambda r: (r["position"], r["source"] != "messages"))
    kept = [(r["source"], r["id"], r["position"], *ids_of(db, r["source"], r["id"])) for r in rows]
    yield
    for table, row_id, at, prompt, captured in kept:
        values = encode_at(db, conv_id, at, prompt, captured)
        db.execute(f"UPDATE {table} SET prompt_base = ?, prompt = ?, captured = ? WHERE id = ?", (*values, row_id))
