"""Worker tokens from before hashing keep working, hashed: each plaintext token of DRF's authtoken table becomes a
knox token with the same value (its digest only), and the plaintext table is dropped."""

from django.db import migrations

PLAINTEXT_TABLE = "authtoken_token"


def hash_plaintext_tokens(apps, schema_editor):
    from knox.crypto import hash_token
    from knox.settings import CONSTANTS

    connection = schema_editor.connection
    if PLAINTEXT_TABLE not in connection.introspection.table_names():
        return
    AuthToken = apps.get_model("knox", "AuthToken")
    table = connection.ops.quote_name(PLAINTEXT_TABLE)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT key, user_id FROM {table}")  # noqa: S608 - a quoted constant table name
        rows = cursor.fetchall()
    for key, user_id in rows:
        AuthToken(
            digest=hash_token(key), token_key=key[: CONSTANTS.TOKEN_KEY_LENGTH], user_id=user_id, expiry=None
        ).save(force_insert=True)
    schema_editor.execute(f"DROP TABLE {table}")


class Migration(migrations.Migration):
    dependencies = [
        ("rollouts", "0007_labellers_group"),
        ("knox", "0009_extend_authtoken_field"),
    ]

    operations = [migrations.RunPython(hash_plaintext_tokens, migrations.RunPython.noop)]
