"""Ledger rules the database enforces: postings and ledger transactions are append-only, and every
ledger transaction balances to zero, in its own currency, at commit (deferred constraint trigger)."""

from django.db import migrations

APPEND_ONLY = """
CREATE FUNCTION brokerage_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER brokerage_posting_append_only BEFORE UPDATE OR DELETE ON brokerage_posting
    FOR EACH ROW EXECUTE FUNCTION brokerage_append_only();
CREATE TRIGGER brokerage_ledgertransaction_append_only BEFORE UPDATE OR DELETE ON brokerage_ledgertransaction
    FOR EACH ROW EXECUTE FUNCTION brokerage_append_only();
"""

BALANCED = """
CREATE FUNCTION brokerage_transaction_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    total numeric;
    mismatched integer;
BEGIN
    SELECT coalesce(sum(p.amount), 0), count(*) FILTER (WHERE a.currency <> t.currency)
      INTO total, mismatched
      FROM brokerage_posting p
      JOIN brokerage_ledgeraccount a ON a.id = p.ledger_account_id
      JOIN brokerage_ledgertransaction t ON t.id = p.transaction_id
     WHERE p.transaction_id = NEW.transaction_id;
    IF total <> 0 THEN
        RAISE EXCEPTION 'ledger transaction % does not balance: postings sum to %', NEW.transaction_id, total
            USING ERRCODE = 'check_violation';
    END IF;
    IF mismatched > 0 THEN
        RAISE EXCEPTION 'ledger transaction % posts to an account in another currency', NEW.transaction_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER brokerage_transaction_balanced AFTER INSERT ON brokerage_posting
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION brokerage_transaction_balanced();
"""


class Migration(migrations.Migration):
    dependencies = [("brokerage", "0001_initial")]

    operations = [
        migrations.RunSQL(
            APPEND_ONLY,
            """
            DROP TRIGGER brokerage_ledgertransaction_append_only ON brokerage_ledgertransaction;
            DROP TRIGGER brokerage_posting_append_only ON brokerage_posting;
            DROP FUNCTION brokerage_append_only();
            """,
        ),
        migrations.RunSQL(
            BALANCED,
            """
            DROP TRIGGER brokerage_transaction_balanced ON brokerage_posting;
            DROP FUNCTION brokerage_transaction_balanced();
            """,
        ),
    ]
