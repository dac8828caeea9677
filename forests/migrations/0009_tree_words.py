"""The forest page's search reads the words of each tree, not of each node: a word common to every step is one index
range of its trees (``forests_treeword``), not a visit to every tree holding it.

``forests_treeword`` holds (forest, word, tree) once for each word a tree holds, written by triggers on
``forests_node`` that add each node's words the tree lacks: on insert, and on an update of ``text`` or ``tree_id``
that changes the text or the tree. PostgreSQL reads a text's words with ``to_tsvector('simple', …)`` and adds a
statement's rows at once (a transition table: words shared by a batch's steps are looked up once); SQLite with
``prmsite_search_words(text)``, which the project's backend registers on every connection
(``prmsite.db.sqlite3``, ``prmsite.core.search_words``). Existing nodes are read in. The per-node indexes this
replaces go (PostgreSQL's GIN index ``node_text_search``, SQLite's FTS5 table ``forests_node_fts`` and its
triggers). Reversible: going back restores them, from the nodes.
"""

import importlib

from django.db import migrations, models

# 100000: forests' SEARCH_TEXT_CHARS and 64: SEARCH_WORD_CHARS (prmsite.core.search_words), written out (a migration
# is frozen). A word is added to a tree where no row holds it yet (no unique key: see forests.models.TreeWord).

_POSTGRES_WORDS = """
    INSERT INTO forests_treeword (forest_id, word, tree_id)
    SELECT DISTINCT added.forest_id, left(found.lexeme, 64), coalesce(added.tree_id, added.id)
    FROM {source}
    CROSS JOIN LATERAL unnest(tsvector_to_array(to_tsvector('simple'::regconfig, left(added.text, 100000))))
        AS found(lexeme)
    LEFT JOIN LATERAL (
        SELECT 1 AS one FROM forests_treeword AS held
        WHERE held.forest_id = added.forest_id AND held.word = left(found.lexeme, 64)
        AND held.tree_id = coalesce(added.tree_id, added.id)
        LIMIT 1
    ) AS known ON true
    WHERE known.one IS NULL"""

_POSTGRES_PROBES = "SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off"

POSTGRES_FORWARD = [
    # Each word is looked up in the index (a LATERAL probe per word, with sequential scans off), whatever the
    # planner's figures: a plan is made at a statement's first run in a session and kept, and one made while the table
    # was empty read it whole for each statement (a forest written in one transaction slowed down with its own
    # words: 2.7 ms a node at 100,000 nodes; planning each run instead costs 0.5 ms a statement). A statement adds a
    # few words a node, so probing the index is right at any size.
    f"""CREATE FUNCTION forests_tree_words_inserted() RETURNS trigger LANGUAGE plpgsql
    {_POSTGRES_PROBES} AS $$
    BEGIN
        {_POSTGRES_WORDS.format(source="added")};
        RETURN NULL;
    END $$""",
    f"""CREATE FUNCTION forests_tree_words_updated() RETURNS trigger LANGUAGE plpgsql
    {_POSTGRES_PROBES} AS $$
    BEGIN
        {_POSTGRES_WORDS.format(source="(SELECT NEW.*) AS added")};
        RETURN NULL;
    END $$""",
    "CREATE TRIGGER forests_node_words_insert AFTER INSERT ON forests_node REFERENCING NEW TABLE AS added "
    "FOR EACH STATEMENT EXECUTE FUNCTION forests_tree_words_inserted()",
    "CREATE TRIGGER forests_node_words_update AFTER UPDATE OF text, tree_id ON forests_node FOR EACH ROW "
    "WHEN (OLD.text IS DISTINCT FROM NEW.text "
    "OR coalesce(OLD.tree_id, OLD.id) IS DISTINCT FROM coalesce(NEW.tree_id, NEW.id)) "
    "EXECUTE FUNCTION forests_tree_words_updated()",
    _POSTGRES_WORDS.format(source="forests_node AS added"),
    "ANALYZE forests_treeword",
    "DROP INDEX IF EXISTS node_text_search",
]
POSTGRES_BACKWARD = [
    "DROP TRIGGER IF EXISTS forests_node_words_update ON forests_node",
    "DROP TRIGGER IF EXISTS forests_node_words_insert ON forests_node",
    "DROP FUNCTION IF EXISTS forests_tree_words_updated()",
    "DROP FUNCTION IF EXISTS forests_tree_words_inserted()",
    *importlib.import_module("forests.migrations.0005_node_search").POSTGRES_FORWARD,
]

_SQLITE_WORDS = """
    INSERT INTO forests_treeword (forest_id, word, tree_id)
    SELECT {distinct}{node}.forest_id, words.value, coalesce({node}.tree_id, {node}.id)
    FROM {source}json_each(prmsite_search_words({node}.text)) AS words
    WHERE NOT EXISTS (
        SELECT 1 FROM forests_treeword AS held
        WHERE held.forest_id = {node}.forest_id AND held.word = words.value
        AND held.tree_id = coalesce({node}.tree_id, {node}.id)
    )"""

SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS forests_node_words_update",
    "DROP TRIGGER IF EXISTS forests_node_words_insert",
]
SQLITE_FORWARD = [
    *SQLITE_DROP,
    f"""CREATE TRIGGER forests_node_words_insert AFTER INSERT ON forests_node BEGIN
        {_SQLITE_WORDS.format(node="new", source="", distinct="")};
    END""",
    f"""CREATE TRIGGER forests_node_words_update AFTER UPDATE OF text, tree_id ON forests_node
    WHEN old.text IS NOT new.text OR coalesce(old.tree_id, old.id) IS NOT coalesce(new.tree_id, new.id) BEGIN
        {_SQLITE_WORDS.format(node="new", source="", distinct="")};
    END""",
    # One statement reads every node: a SELECT that reads the table it writes is read whole first, so the statement
    # does not see its own rows, and DISTINCT keeps each word of a tree once (a trigger adds one node's at a time).
    _SQLITE_WORDS.format(node="node", source="forests_node AS node, ", distinct="DISTINCT "),
    *importlib.import_module("forests.migrations.0008_forest_page_search").DROP,
]
SQLITE_BACKWARD = [*SQLITE_DROP, *importlib.import_module("forests.migrations.0008_forest_page_search").FORWARD]

# Each database runs its own statements, as in 0005.
_run = importlib.import_module("forests.migrations.0005_node_search")._run


class Migration(migrations.Migration):
    dependencies = [("forests", "0008_forest_page_search")]

    operations = [
        migrations.CreateModel(
            name="TreeWord",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("word", models.CharField(max_length=64)),
                (
                    "forest",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=models.deletion.CASCADE,
                        related_name="+",
                        to="forests.forest",
                    ),
                ),
                (
                    "tree",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        help_text="The root.",
                        on_delete=models.deletion.DO_NOTHING,
                        related_name="+",
                        to="forests.node",
                    ),
                ),
            ],
            options={
                "indexes": [models.Index(fields=["forest", "word", "tree"], name="treeword_forest_word_tree")],
            },
        ),
        migrations.RunPython(
            _run({"postgresql": POSTGRES_FORWARD, "sqlite": SQLITE_FORWARD}),
            _run({"postgresql": POSTGRES_BACKWARD, "sqlite": SQLITE_BACKWARD}),
        ),
    ]
