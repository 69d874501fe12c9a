"""Store: SQLite round trips, crash safety, migrations, exports."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from backends.core.errors import LlmTuiError, UsageError
from backends.core.events import Stats
from backends.core.params import SamplingParams
from backends.storage.export import conversation_json, conversation_markdown
from backends.storage.migrations import SCHEMA_VERSION, migrate
from backends.storage.store import DB_NAME, STATUSES, Store, StoreDamaged

ROOT = Path(__file__).resolve().parents[1]

META = {
    "spec": {"source": "/models/qwen", "quant": "nf4", "dtype": "bf16", "device_map": "auto"},
    "family": "qwen",
}


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "chats.sqlite3"


@pytest.fixture
def store(db_path):
    with Store(db_path) as s:
        yield s


def test_default_location_follows_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_TUI_DATA_DIR", str(tmp_path / "data"))
    with Store() as s:
        assert s.path == tmp_path / "data" / DB_NAME
    assert (tmp_path / "data" / DB_NAME).is_file()


def test_new_file_is_migrated_and_uses_wal(db_path):
    Store(db_path).close()
    db = sqlite3.connect(db_path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"conversations", "messages"} <= tables


def test_empty_existing_file_is_migrated(db_path):
    db_path.write_bytes(b"")
    with Store(db_path) as s:
        assert s.list_conversations() == []


def test_reopening_does_not_migrate_again(db_path):
    with Store(db_path) as s:
        s.new_conversation("m")
    db = sqlite3.connect(db_path)
    assert migrate(db) == SCHEMA_VERSION
    with Store(db_path) as s:
        assert len(s.list_conversations()) == 1


def test_newer_schema_is_refused_with_a_clear_line(db_path):
    db = sqlite3.connect(db_path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(LlmTuiError, match="newer llm-tui") as err:
        Store(db_path)
    assert "\n" not in str(err.value)


def test_a_file_that_is_not_a_database(db_path):
    db_path.write_bytes(b"this is not sqlite at all, just some text" * 10)
    before = db_path.read_bytes()
    with pytest.raises(StoreDamaged, match=r"is damaged \(file is not a database\); nothing is saved"):
        Store(db_path)
    assert db_path.read_bytes() == before  # left as it was


def test_round_trip(store):
    params = SamplingParams(temperature=0.0, seed=42)
    conv = store.new_conversation("qwen-7b", "You are terse.", params, meta=META)
    user = store.add_message(conv, "user", "Hi", prompt_ids=None)
    stats = Stats(prompt_tokens=12, new_tokens=3, ttft_s=0.05, decode_tok_s=30.0, total_s=0.2)
    reply = store.add_message(conv, "assistant", "Hello.", model="qwen-7b", stats=stats,
                              prompt_ids=[1, 2, 3], captured_ids=[1, 2, 3])
    loaded = store.load_conversation(conv)
    assert loaded.id == conv
    assert (loaded.model, loaded.system) == ("qwen-7b", "You are terse.")
    assert loaded.params == params.to_json()
    assert loaded.sampling_params() == params
    assert loaded.meta == META
    assert [m.id for m in loaded.messages] == [user, reply]
    assert [m.position for m in loaded.messages] == [0, 1]
    first, second = loaded.messages
    assert (first.role, first.content, first.status, first.stats) == ("user", "Hi", "complete", None)
    assert second.stats == stats.to_json()
    assert second.prompt_ids == [1, 2, 3] and second.captured_ids == [1, 2, 3]
    assert second.model == "qwen-7b"
    assert loaded.to_conversation().messages == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
    ]


def test_params_as_plain_dict(store):
    conv = store.new_conversation("m", None, {"temperature": 0.3, "unknown": 1})
    loaded = store.load_conversation(conv)
    assert loaded.params == {"temperature": 0.3, "unknown": 1}
    assert loaded.sampling_params().temperature == 0.3


def test_streaming_reply_is_updated_in_place(store):
    conv = store.new_conversation("m")
    store.add_message(conv, "user", "Count")
    reply = store.add_message(conv, "assistant", "", status="partial")
    for text in ("1", "1 2", "1 2 3"):
        store.update_message(reply, content=text)
    store.update_message(reply, status="stopped", stats={"new_tokens": 3}, captured_ids=[9, 8])
    message = store.load_conversation(conv).messages[-1]
    assert (message.content, message.status, message.stats, message.captured_ids) == (
        "1 2 3", "stopped", {"new_tokens": 3}, [9, 8])


def test_partial_reply_survives_a_crash(db_path):
    # The child writes a partial reply and dies without closing anything.
    code = (
        "import os, sys\n"
        "from backends.storage.store import Store\n"
        f"s = Store({str(db_path)!r})\n"
        "c = s.new_conversation('m')\n"
        "s.add_message(c, 'user', 'Tell me a story')\n"
        "r = s.add_message(c, 'assistant', '', status='partial')\n"
        "s.update_message(r, content='Once upon a')\n"
        "sys.stdout.flush()\n"
        "os._exit(9)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 9, result.stderr
    with Store(db_path) as s:
        conv = s.latest_conversation_id()
        assert conv is not None
        message = s.load_conversation(conv).messages[-1]
        assert (message.role, message.content, message.status) == ("assistant", "Once upon a", "partial")


def test_partial_reply_seen_by_a_second_store_on_the_same_file(db_path):
    writer = Store(db_path)
    conv = writer.new_conversation("m")
    reply = writer.add_message(conv, "assistant", "half", status="partial")
    with Store(db_path) as reader:
        assert reader.load_conversation(conv).messages[0].content == "half"
    writer.update_message(reply, content="half and more")
    with Store(db_path) as reader:
        assert reader.load_conversation(conv).messages[0].content == "half and more"
    writer.close()


def test_delete_messages_after(store):
    conv = store.new_conversation("m")
    for role, text in (("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d")):
        store.add_message(conv, role, text)
    assert store.delete_messages_after(conv, 2) == 1  # regenerate the last reply
    assert [m.content for m in store.load_conversation(conv).messages] == ["a", "b", "c"]
    assert store.delete_messages_after(conv, 0) == 2  # edit from the first reply on
    store.add_message(conv, "assistant", "b2")
    assert [(m.position, m.content) for m in store.load_conversation(conv).messages] == [(0, "a"), (1, "b2")]


def test_positions_are_per_conversation(store):
    one, two = store.new_conversation("m"), store.new_conversation("m")
    store.add_message(one, "user", "x")
    store.add_message(two, "user", "y")
    store.add_message(one, "assistant", "z")
    assert [m.position for m in store.load_conversation(one).messages] == [0, 1]
    assert [m.position for m in store.load_conversation(two).messages] == [0]


def test_list_and_latest(store):
    assert store.latest_conversation_id() is None
    first = store.new_conversation("a")
    store.add_message(first, "user", "first question\nwith two lines")
    second = store.new_conversation("b")
    store.set_title(second, "Named")
    assert store.latest_conversation_id() == second
    store.add_message(first, "assistant", "answer")  # touching it makes it the latest
    assert store.latest_conversation_id() == first
    summaries = store.list_conversations()
    assert [s.id for s in summaries] == [first, second]
    assert summaries[0].preview == "first question with two lines"
    assert summaries[0].label == "first question with two lines"
    assert summaries[0].message_count == 2
    assert summaries[1].label == "Named" and summaries[1].message_count == 0
    assert len(store.list_conversations(limit=1)) == 1


def test_update_conversation_and_delete(store):
    conv = store.new_conversation("a", "sys")
    store.update_conversation(conv, model="b", system=None, params=SamplingParams(top_k=5), meta={"family": "x"})
    loaded = store.load_conversation(conv)
    assert (loaded.model, loaded.system, loaded.params["top_k"], loaded.meta) == ("b", None, 5, {"family": "x"})
    store.add_message(conv, "user", "bye")
    store.delete_conversation(conv)
    assert store.list_conversations() == []
    with pytest.raises(UsageError, match="no saved conversation"):
        store.load_conversation(conv)


def test_bad_input_is_a_usage_error(store):
    conv = store.new_conversation("m")
    with pytest.raises(UsageError, match="unknown role"):
        store.add_message(conv, "robot", "x")
    with pytest.raises(UsageError, match="status"):
        store.add_message(conv, "user", "x", status="done")
    with pytest.raises(UsageError, match="no saved conversation"):
        store.add_message(conv + 100, "user", "x")
    with pytest.raises(UsageError, match="no saved message"):
        store.update_message(12345, content="x")
    assert set(STATUSES) == {"complete", "partial", "stopped", "error"}


def test_unicode_content(store):
    text = "中文 ☕ émoji 🎉🧪 and a lone combining mark e\u0301 and NUL-free \t tabs"
    conv = store.new_conversation("模型", "系统提示")
    store.add_message(conv, "user", text)
    loaded = store.load_conversation(conv)
    assert loaded.messages[0].content == text
    assert loaded.model == "模型" and loaded.system == "系统提示"
    exported = json.dumps(conversation_json(store.load_conversation(conv)), ensure_ascii=False)
    assert text in json.loads(exported)["messages"][0]["content"]
    assert text in conversation_markdown(store.load_conversation(conv))


def test_export_json_is_enough_to_reproduce(store):
    params = SamplingParams(temperature=0.5, top_p=0.8, seed=7)
    conv = store.new_conversation("qwen-7b", "Be brief.", params, meta=META)
    store.set_title(conv, "Repro")
    store.add_message(conv, "user", "2+2?")
    store.add_message(conv, "assistant", "4", model="qwen-7b", stats=Stats(new_tokens=1),
                      prompt_ids=[10, 11, 12], captured_ids=[10, 11, 12])
    data = conversation_json(store.load_conversation(conv))
    json.dumps(data)  # plain JSON all the way down
    assert data["format"] == "llm-tui.conversation"
    assert (data["title"], data["model"], data["system"]) == ("Repro", "qwen-7b", "Be brief.")
    assert (data["dtype"], data["quantization"], data["family"]) == ("bf16", "nf4", "qwen")
    assert data["params"] == params.to_json()
    assert data["seed"] == 7
    assert data["meta"] == META
    reply = data["messages"][1]
    assert reply["prompt_ids"] == [10, 11, 12] and reply["captured_ids"] == [10, 11, 12]
    assert reply["stats"]["new_tokens"] == 1
    assert reply["status"] == "complete"
    assert data["created"].endswith("+00:00")


def test_export_json_prefers_resolved_model_details(store):
    conv = store.new_conversation("m", meta={"spec": {"dtype": "auto", "quant": "none"}, "dtype": "bfloat16"})
    assert conversation_json(store.load_conversation(conv))["dtype"] == "bfloat16"
    assert conversation_json(store.load_conversation(store.new_conversation("m")))["dtype"] is None


def test_export_markdown(store):
    conv = store.new_conversation("qwen-7b", "Be brief.", SamplingParams(seed=1), meta=META)
    store.add_message(conv, "user", "Name a colour.")
    store.add_message(conv, "assistant", "Blue", stats=Stats(prompt_tokens=9, new_tokens=1, decode_tok_s=12.5))
    store.add_message(conv, "user", "Another?")
    store.add_message(conv, "assistant", "Gre", status="stopped", model="other-model")
    text = conversation_markdown(store.load_conversation(conv))
    assert text.startswith("# Name a colour.\n")
    assert "**Model:** qwen-7b" in text and "**Family:** qwen" in text
    assert "seed=1" in text
    assert "## System\n\nBe brief." in text
    assert "## User\n\nName a colour." in text
    assert "## Assistant\n\nBlue" in text
    assert "12.5 tok/s" in text
    assert "## Assistant (other-model, stopped)\n\nGre" in text


def test_writes_from_several_threads(store):
    conv = store.new_conversation("m")
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(20):
                store.add_message(conv, "user", f"{n}-{i}")
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    positions = [m.position for m in store.load_conversation(conv).messages]
    assert positions == list(range(80))
