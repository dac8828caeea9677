"""Full-text search over node texts (the forest page's search): a GIN index on PostgreSQL, an FTS5 table on SQLite.

Both index the first 100,000 characters of each text (a PostgreSQL tsvector holds at most 1 MB). On
PostgreSQL the index is on the very expression ``forests.forest_search`` filters by; on SQLite the FTS5 table
``forests_node_fts`` (external content: ``forests_node``, rowid = node id) is kept in step by three triggers. Each
database runs only its own statements; the migration is reversible on both.
"""

from django.db import migrations

# 100000 below: forests.forest_search.SEARCH_TEXT_CHARS (a migration is frozen, so the figure is written out).

POSTGRES_FORWARD = [
    "CREATE INDEX node_text_search ON forests_node USING GIN "
    "(to_tsvector('simple'::regconfig, left(text, 100000)))",
]
POSTGRES_BACKWARD = ["DROP INDEX IF EXISTS node_text_search"]

SQLITE_FORWARD = [
    "CREATE VIRTUAL TABLE forests_node_fts USING fts5(text, content='forests_node', content_rowid='id')",
    "INSERT INTO forests_node_fts(rowid, text) SELECT id, substr(text, 1, 100000) FROM forests_node",
    """CREATE TRIGGER forests_node_fts_insert AFTER INSERT ON forests_node BEGIN
        INSERT INTO forests_node_fts(rowid, text) VALUES (new.id, substr(new.text, 1, 100000));
    END""",
    """CREATE TRIGGER forests_node_fts_delete AFTER DELETE ON forests_node BEGIN
        INSERT INTO forests_node_fts(forests_node_fts, rowid, text)
        VALUES ('delete', old.id, substr(old.text, 1, 100000));
    END""",
    """CREATE TRIGGER forests_node_fts_update AFTER UPDATE OF text ON forests_node BEGIN
        INSERT INTO forests_node_fts(forests_node_fts, rowid, text)
        VALUES ('delete', old.id, substr(old.text, 1, 100000));
        INSERT INTO forests_node_fts(rowid, text) VALUES (new.id, substr(new.text, 1, 100000));
    END""",
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS forests_node_fts_update",
    "DROP TRIGGER IF EXISTS forests_node_fts_delete",
    "DROP TRIGGER IF EXISTS forests_node_fts_insert",
    "DROP TABLE IF EXISTS forests_node_fts",
]


def _run(statements_by_vendor):
    def run(apps, schema_editor):
        for statement in statements_by_vendor.get(schema_editor.connection.vendor, []):
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [("forests", "0004_search_reports")]

    operations = [
        migrations.RunPython(
            _run({"postgresql": POSTGRES_FORWARD, "sqlite": SQLITE_FORWARD}),
            _run({"postgresql": POSTGRES_BACKWARD, "sqlite": SQLITE_BACKWARD}),
        )
    ]
