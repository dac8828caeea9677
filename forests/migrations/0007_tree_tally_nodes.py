"""Each tree's node count in its tally (the forest page sorts and filters trees by it without counting nodes).

Existing tallies are counted once here; trees without a tally get one as rollouts arrive, and readers count the
nodes of a tree whose tally has none. Depends on 0005 for now: the lead rebases it onto 0006 at merge.
"""

import django.db.models.deletion
from django.db import migrations, models


# Plain SQL, the same on SQLite and PostgreSQL (a correlated count through the node table's tree index).
BACKFILL = (
    "UPDATE forests_treetally SET nodes = "
    "(SELECT COUNT(*) FROM forests_node WHERE forests_node.tree_id = forests_treetally.root_id)"
)


class Migration(migrations.Migration):

    dependencies = [
        ('forests', '0006_adaptive_growth'),
    ]

    operations = [
        migrations.AddField(
            model_name='treetally',
            name='nodes',
            field=models.BigIntegerField(blank=True, help_text="Nodes of the tree, the root included, kept as rollouts add them (null: not counted yet; readers count the tree's nodes instead).", null=True),
        ),
        migrations.AlterField(
            model_name='treetally',
            name='root',
            field=models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='tally', serialize=False, to='forests.node'),
        ),
        migrations.RunSQL(BACKFILL, reverse_sql=migrations.RunSQL.noop),
    ]
