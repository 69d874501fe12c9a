"""Prompt and captured IDs stored once per turn: exact round trips, linear growth, rows that move
(branches, resets, copies), and the upgrade of a database written the old way (v2: JSON lists)."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.core.errors import LlmTuiError
from backends.core.sequences import common_prefix
from backends.storage import idlists
from backends.storage.export import conversation_json
from backends.storage.migrations import MIGRATIONS, SCHEMA_VERSION
from backends.storage.store import Store, StoreDamaged

ids_lists = st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=300)
token_ids = st.lists(st.integers(min_value=0, max_value=160_000), max_size=200)


# -- the codec ------------------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=2**40), ids_lists)
def test_pack_round_trips_any_integers(keep, add):
    got_keep, got_add = idlists.unpack(idlists.pack(keep, add))
    assert (got_keep, got_add.tolist()) == (keep, add)


@given(token_ids, token_ids, token_ids)
def test_a_list_kept_against_another_reads_back_exactly(shared, base_tail, tail):
    base, ids = idlists.as_wide(shared + base_tail), shared + tail
    assert idlists.decode(idlists.encode(ids, base), base).tolist() == ids
    assert idlists.decode(idlists.encode(ids, None), None).tolist() == ids


@given(token_ids, token_ids)
def test_common_prefix_is_the_first_difference(a, b):
    naive = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    assert common_prefix(idlists.as_wide(a), idlists.as_wide(b)) == naive  # arrays, as the store has them
    assert common_prefix(a, b) == naive  # lists, as a prompt cache has them


def test_widths_follow_the_largest_id():
    assert len(idlists.pack(0, [49_151] * 10)) == 2 + 20  # a 49k vocabulary: two bytes an ID
    assert len(idlists.pack(0, [151_000] * 10)) == 2 + 40
    assert idlists.unpack(idlists.pack(0, list(range(5000))))[1].tolist() == list(range(5000))  # compressed


# -- a conversation in the store --------------------------------------------------------------------


def grow(rng: random.Random, prompt: list[int], reply: list[int]) -> list[int]:
    """The next turn's prompt: this one, the reply, the next message; now and then the template
    re-tokenises the reply's end differently, or the oldest messages are cut (a budget)."""
    nxt = prompt + reply + [rng.randrange(49152) for _ in range(rng.randrange(1, 40))]
    roll = rng.random()
    if roll < 0.15 and reply:
        at = len(prompt) + rng.randrange(len(reply))
        nxt[at] = (nxt[at] + 1) % 49152
    elif roll < 0.25 and len(nxt) > 10:
        nxt = nxt[:3] + nxt[rng.randrange(4, len(nxt)):]
    return nxt


def captured_of(rng: random.Random, prompt: list[int]) -> list[int] | None:
    """What an engine reports: the prompt as sent, a cached prefix's rest, a difference, or nothing."""
    roll = rng.random()
    if roll < 0.5:
        return list(prompt)
    if roll < 0.65:
        return prompt[: rng.randrange(len(prompt) + 1)]
    if roll < 0.8 and prompt:
        changed = list(prompt)
        changed[rng.randrange(len(changed))] += 1
        return changed
    if roll < 0.9:
        return None
    return [rng.randrange(49152) for _ in range(rng.randrange(20))]


def write_conversation(store: Store, turns: int, seed: int) -> tuple[int, list]:
    """A conversation written as the recorder writes it; returns its id and every reply's (prompt, captured)."""
    rng = random.Random(seed)
    conv = store.new_conversation("m")
    prompt: list[int] = [1, 2, 3]
    expected = []
    for n in range(turns):
        store.add_message(conv, "user", f"question {n}")
        reply_id = store.add_message(conv, "assistant", "", status="partial")
        reply = [rng.randrange(49152) for _ in range(rng.randrange(0, 60))]
        captured = captured_of(rng, prompt)
        store.update_message(reply_id, content=f"answer {n}", status="complete", prompt_ids=prompt,
                             captured_ids=captured)
        expected.append((list(prompt), captured))
        prompt = grow(rng, prompt, reply)
    return conv, expected


def stored_ids(store: Store, conv: int) -> list:
    return [(m.prompt_ids, m.captured_ids) for m in store.load_conversation(conv).messages if m.role == "assistant"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(min_value=1, max_value=12), st.integers(min_value=0, max_value=10**6))
def test_every_reply_reads_back_the_lists_it_was_given(tmp_path, turns, seed):
    with Store(tmp_path / f"{seed}-{turns}.sqlite3") as store:
        conv, expected = write_conversation(store, turns, seed)
        assert stored_ids(store, conv) == expected
        replies = [m for m in store.load_conversation(conv).messages if m.role == "assistant"]
        for message, (prompt, captured) in zip(replies, expected):  # one message alone, too
            one = store.message(message.id)
            assert (one.prompt_ids, one.captured_ids) == (prompt, captured)
        exported = [m for m in conversation_json(store.load_conversation(conv))["messages"] if m["role"] == "assistant"]
        assert [(m["prompt_ids"], m["captured_ids"]) for m in exported] == expected


def test_empty_lists_and_none_stay_apart(tmp_path):
    with Store(tmp_path / "db.sqlite3") as store:
        conv = store.new_conversation("m")
        store.add_message(conv, "assistant", "a", prompt_ids=[], captured_ids=None)
        store.add_message(conv, "assistant", "b", prompt_ids=None, captured_ids=[])
        store.add_message(conv, "assistant", "c", prompt_ids=[5, 6], captured_ids=[])
        assert stored_ids(store, conv) == [([], None), (None, []), ([5, 6], [])]


def test_each_turn_costs_what_it_adds_not_the_whole_conversation(tmp_path):
    with Store(tmp_path / "db.sqlite3") as store:
        conv = store.new_conversation("m")
        rng = random.Random(7)
        prompt = [rng.randrange(49152) for _ in range(50)]
        for n in range(100):
            store.add_message(conv, "user", "q")
            store.add_message(conv, "assistant", "a", prompt_ids=prompt, captured_ids=list(prompt))
            prompt = prompt + [rng.randrange(49152) for _ in range(100)]  # a reply and a message: 100 IDs a turn
    db = sqlite3.connect(tmp_path / "db.sqlite3")
    sizes = [row[0] for row in db.execute("SELECT length(prompt) + length(captured) FROM messages"
                                          " WHERE role = 'assistant' ORDER BY position")]
    assert sizes[99] == sizes[19]  # the same 100 new IDs at turn 20 and turn 100
    assert sizes[99] < 100 * 2 + 10  # two bytes an ID, a few of bookkeeping (captured: "as sent")
    assert len(sizes) == 100


# -- rows that move: later prompts stay right ------------------------------------------------------


def reply_ids(store: Store, conv: int) -> list[int]:
    return [m.id for m in store.load_conversation(conv).messages if m.role == "assistant"]


def test_a_reply_reset_or_rewritten_in_the_middle_leaves_the_later_ones_as_they_were(tmp_path):
    with Store(tmp_path / "db.sqlite3") as store:
        conv, expected = write_conversation(store, 8, seed=3)
        ids = reply_ids(store, conv)
        store.reset_message(ids[3], "m")  # a reply written again in place: its IDs go
        expected[3] = (None, None)
        assert stored_ids(store, conv) == expected
        store.update_message(ids[3], prompt_ids=[9, 9, 9], captured_ids=[9, 9])
        expected[3] = ([9, 9, 9], [9, 9])
        assert stored_ids(store, conv) == expected
        store.update_message(ids[5], captured_ids=[4])  # the prompt stays; captured alone changes
        expected[5] = (expected[5][0], [4])
        assert stored_ids(store, conv) == expected


def test_branches_swap_in_the_middle_and_keep_their_ids(tmp_path):
    with Store(tmp_path / "db.sqlite3") as store:
        conv, expected = write_conversation(store, 6, seed=11)
        ids = reply_ids(store, conv)
        store.keep_as_branch(ids[2])
        other_prompt = [77] + expected[2][0][1:]  # differs from the first ID on: no later prompt shares it
        store.update_message(ids[2], content="another", prompt_ids=other_prompt, captured_ids=None)
        (branch,) = store.branches_of(ids[2])
        assert (branch.prompt_ids, branch.captured_ids) == expected[2]
        assert stored_ids(store, conv) == [*expected[:2], (other_prompt, None), *expected[3:]]
        store.switch_branch(ids[2], branch.id)  # the first reply back in place, the other a branch
        assert stored_ids(store, conv) == expected
        (other,) = store.branches_of(ids[2])
        assert (other.prompt_ids, other.captured_ids) == (other_prompt, None)
        loaded = store.load_conversation(conv).messages
        (loaded_branch,) = [m for m in loaded if m.id == ids[2]][0].branches
        assert loaded_branch.prompt_ids == other_prompt


def test_a_copy_and_a_shortened_conversation_read_back_the_same(tmp_path):
    with Store(tmp_path / "db.sqlite3") as store:
        conv, expected = write_conversation(store, 6, seed=5)
        copy = store.copy_conversation(conv)
        store.delete_conversation(conv)
        assert stored_ids(store, copy) == expected
        store.delete_messages_after(copy, 5)  # the first three turns are left
        assert stored_ids(store, copy) == expected[:3]
        store.add_message(copy, "assistant", "again", prompt_ids=expected[3][0], captured_ids=expected[3][1])
        assert stored_ids(store, copy) == expected[:4]


# -- the upgrade from JSON lists (schema 2) --------------------------------------------------------


def old_database(path: Path, turns: int = 30) -> list:
    """A database as llm-tui wrote it at schema 2: every reply's prompt and captured IDs as JSON lists,
    a branch among them and one row whose list cannot be read."""
    db = sqlite3.connect(path, isolation_level=None)
    for step in MIGRATIONS[:2]:  # the schema as it was, from the steps that built it
        step(db)
    db.execute("PRAGMA user_version = 2")
    rng = random.Random(1)
    expected = []
    for conv in (1, 2):
        db.execute("INSERT INTO conversations (id, title, created, updated) VALUES (?, '', 0, 0)", (conv,))
        prompt = [1, 2]
        for n in range(turns):
            db.execute("INSERT INTO messages (conversation_id, position, role, content, created)"
                       " VALUES (?, ?, 'user', 'q', 0)", (conv, 2 * n))
            captured = captured_of(rng, prompt)
            cursor = db.execute(
                "INSERT INTO messages (conversation_id, position, role, content, prompt_ids, captured_ids, created)"
                " VALUES (?, ?, 'assistant', 'a', ?, ?, 0)",
                (conv, 2 * n + 1, json.dumps(prompt), None if captured is None else json.dumps(captured)))
            if n == 4:
                db.execute("INSERT INTO branches (message_id, content, status, prompt_ids, captured_ids, created)"
                           " VALUES (?, 'b', 'complete', ?, ?, 0)", (cursor.lastrowid, json.dumps(prompt + [5]),
                                                                      json.dumps(prompt)))
            expected.append((conv, list(prompt), captured))
            prompt = grow(rng, prompt, [rng.randrange(49152) for _ in range(80)])
    db.execute("INSERT INTO messages (conversation_id, position, role, content, prompt_ids, created)"
               " VALUES (2, 999, 'assistant', 'broken', '[1, 2', 0)")
    db.close()
    return expected


def test_an_old_database_is_upgraded_and_reads_back_the_same_lists(tmp_path):
    path = tmp_path / "old.sqlite3"
    expected = old_database(path)
    size_before = path.stat().st_size
    with Store(path) as store:
        for conv in (1, 2):
            messages = [m for m in store.load_conversation(conv).messages if m.role == "assistant"]
            want = [(p, c) for n, p, c in expected if n == conv]
            if conv == 2:
                want.append((None, None))  # the list that could not be read then cannot now
            assert [(m.prompt_ids, m.captured_ids) for m in messages] == want
            branch = messages[4].branches[0]
            assert (branch.prompt_ids, branch.captured_ids) == (want[4][0] + [5], want[4][0])
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    columns = {row[1] for row in db.execute("PRAGMA table_info(messages)")}
    assert {"prompt_base", "prompt", "captured"} <= columns and "prompt_ids" not in columns
    db.close()
    assert path.stat().st_size < size_before / 3  # the rows shrank, and VACUUM gave the pages back


def test_a_failed_upgrade_leaves_the_old_database_as_it_was(tmp_path):
    path = tmp_path / "old.sqlite3"
    old_database(path, turns=3)
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE branches ADD COLUMN captured BLOB")  # the upgrade fails part way, on its sixth column
    db.commit()
    db.close()
    with pytest.raises(LlmTuiError, match="duplicate column") as raised:
        Store(path)
    assert not isinstance(raised.value, StoreDamaged)  # not called damaged: F3 would offer to move it aside
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    assert db.execute("SELECT count(*) FROM messages WHERE prompt_ids IS NOT NULL").fetchone()[0] == 7
    db.close()
