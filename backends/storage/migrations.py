"""The store's schema, migrated by ``PRAGMA user_version``: one function per version."""

from __future__ import annotations

import sqlite3
from typing import Callable

from backends.core.errors import LlmTuiError

# -- schema ------------------------------------------------------------------


def _v1(db: sqlite3.Connection) -> None:
    db.execute(
        """
        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL DEFAULT '',
            created REAL NOT NULL,
            updated REAL NOT NULL,
            model TEXT,
            system TEXT,
            params TEXT NOT NULL DEFAULT '{}',
            meta TEXT NOT NULL DEFAULT '{}'
        )
        """
    )
    db.execute(
        """
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            role TEXT NOT NULL,
            content TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'complete',
            model TEXT,
            stats TEXT,
            prompt_ids TEXT,
            captured_ids TEXT,
            created REAL NOT NULL,
            UNIQUE (conversation_id, position)
        )
        """
    )
    db.execute("CREATE INDEX conversations_by_updated ON conversations(updated)")


def _v2(db: sqlite3.Connection) -> None:
    """Each reply's tokens (IDs, texts, probabilities; ``storage.tokens``), and the other replies
    of a turn (branches) beside the one the conversation goes on from."""
    db.execute("ALTER TABLE messages ADD COLUMN tokens BLOB")
    db.execute(
        """
        CREATE TABLE branches (
            id INTEGER PRIMARY KEY,
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            content TEXT NOT NULL,
            status TEXT NOT NULL,
            model TEXT,
            stats TEXT,
            prompt_ids TEXT,
            captured_ids TEXT,
            tokens BLOB,
            created REAL NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX branches_by_message ON branches(message_id)")


#: MIGRATIONS[n] upgrades a database from user_version n to n + 1.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_v1, _v2)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(db: sqlite3.Connection) -> int:
    """Bring the schema up to SCHEMA_VERSION; returns the version found."""
    found = db.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        raise LlmTuiError(
            f"the conversation database was written by a newer llm-tui"
            f" (schema {found}, this one knows {SCHEMA_VERSION})",
            "upgrade llm-tui, or set LLM_TUI_DATA_DIR to use another folder")
    for version in range(found, SCHEMA_VERSION):
        # Each step and its version bump commit together or not at all.
        db.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[version](db)
            db.execute(f"PRAGMA user_version = {version + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return found
