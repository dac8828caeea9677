"""The forest page's search finds the trees holding a word at the cost of the trees, not of the word's nodes.

SQLite: ``forests_node_fts`` becomes a contentless FTS5 table whose rowid is ``(tree id << 32) | node id`` (nothing
reads its content: every search reads only rowids), so its hits come in tree order and a query can seek to the next
tree (``rowid >= (tree + 1) << 32``): the trees holding a word are one seek each, however many of their steps hold
it. Node and tree ids must stay under 2**32 (a root's own id stands for its tree while ``tree_id`` is still null:
roots get ``tree_id`` = their id just after the insert). The triggers keep it as 0005's did, and also follow a change
of ``tree_id``. PostgreSQL: nothing changes (its GIN index answers the per-tree probes, see
``forests.forest_search``). Reversible: going back restores 0005's table and triggers.

Both: a partial index of the roots by forest, depth and ground truth (``node_root_truth``), so the page's filter by ground
truth reads the index, not one root row per tree; only roots are in it, so the intake's steps do not write it.
"""

import importlib

from django.db import migrations, models

# 100000 below: forests.forest_search.SEARCH_TEXT_CHARS; 32: forests.forest_search.FTS_TREE_SHIFT (a migration is
# frozen, so the figures are written out). Each row's FTS rowid: (coalesce(tree_id, id) << 32) | id.

DROP = [
    "DROP TRIGGER IF EXISTS forests_node_fts_update",
    "DROP TRIGGER IF EXISTS forests_node_fts_delete",
    "DROP TRIGGER IF EXISTS forests_node_fts_insert",
    "DROP TABLE IF EXISTS forests_node_fts",
]

FORWARD = [
    *DROP,
    "CREATE VIRTUAL TABLE forests_node_fts USING fts5(text, content='')",
    "INSERT INTO forests_node_fts(rowid, text) "
    "SELECT ((coalesce(forests_node.tree_id, forests_node.id) << 32) | forests_node.id), substr(text, 1, 100000) FROM forests_node",
    """CREATE TRIGGER forests_node_fts_insert AFTER INSERT ON forests_node BEGIN
        INSERT INTO forests_node_fts(rowid, text) VALUES (((coalesce(new.tree_id, new.id) << 32) | new.id), substr(new.text, 1, 100000));
    END""",
    """CREATE TRIGGER forests_node_fts_delete AFTER DELETE ON forests_node BEGIN
        INSERT INTO forests_node_fts(forests_node_fts, rowid, text)
        VALUES ('delete', ((coalesce(old.tree_id, old.id) << 32) | old.id), substr(old.text, 1, 100000));
    END""",
    """CREATE TRIGGER forests_node_fts_update AFTER UPDATE OF text, tree_id ON forests_node BEGIN
        INSERT INTO forests_node_fts(forests_node_fts, rowid, text)
        VALUES ('delete', ((coalesce(old.tree_id, old.id) << 32) | old.id), substr(old.text, 1, 100000));
        INSERT INTO forests_node_fts(rowid, text) VALUES (((coalesce(new.tree_id, new.id) << 32) | new.id), substr(new.text, 1, 100000));
    END""",
]

# 0005's table and triggers (external content, rowid = node id), as 0005 made them.
BACKWARD = [*DROP, *importlib.import_module("forests.migrations.0005_node_search").SQLITE_FORWARD]


def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "sqlite":
            for statement in statements:
                schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [("forests", "0007_tree_tally_nodes")]

    operations = [
        migrations.RunPython(_run(FORWARD), _run(BACKWARD)),
        migrations.AddIndex(
            model_name="node",
            index=models.Index(
                condition=models.Q(("depth", 0)), fields=["forest", "depth", "ground_truth"], name="node_root_truth"
            ),
        ),
    ]
